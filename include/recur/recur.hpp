// recur/recur.hpp — everything public.
#pragma once

#include "recur/error.hpp"
#include "recur/gradcheck.hpp"
#include "recur/ops.hpp"
#include "recur/tape.hpp"
#include "recur/nn/cells.hpp"
#include "recur/nn/init.hpp"
#include "recur/nn/module.hpp"
#include "recur/nn/recurrent.hpp"
