// recur/recur.hpp — everything public.
#pragma once

#include "recur/error.hpp"
#include "recur/gradcheck.hpp"
#include "recur/ops.hpp"
#include "recur/tape.hpp"
