// recur/recur.hpp — everything public.
#pragma once

#include "recur/data.hpp"
#include "recur/error.hpp"
#include "recur/gradcheck.hpp"
#include "recur/io.hpp"
#include "recur/metrics.hpp"
#include "recur/nn/cells.hpp"
#include "recur/nn/init.hpp"
#include "recur/nn/layers.hpp"
#include "recur/nn/losses.hpp"
#include "recur/nn/module.hpp"
#include "recur/nn/recurrent.hpp"
#include "recur/ops.hpp"
#include "recur/optim.hpp"
#include "recur/parallel.hpp"
#include "recur/tape.hpp"
#include "recur/train.hpp"
