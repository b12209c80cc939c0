"""The flat per-series state layout: one float64 row per series, named column offsets.

Version 1. A row holds the residual priors (normal-gamma, Poisson, their one-of-n log weights), the
level, the daily seasonal component (36 knots), the periodicity-test window (168 slots), the
multi-bucket window and prior, and change-detection accumulators. 296 columns = 2368 bytes.
"""

STATE_VERSION = 1

# bookkeeping
T_FIRST = 0  # first bucket time (s), NaN before the first update
T_LAST = 1  # last update time (s)
N_EFF = 2  # decayed number of updates (weight sum)
FLAGS_INT = 3  # 1 while every value seen is an integer
FLAGS_NONNEG = 4  # 1 while every value seen is >= 0
# normal-gamma prior on residuals
NG_M = 5
NG_P = 6
NG_A = 7
NG_B = 8
# Poisson (gamma on the rate) on raw values
PO_A = 9
PO_B = 10
# one-of-n log weights
LW_NORMAL = 11
LW_POISSON = 12
# level (trend)
LEVEL = 13
LEVEL_N = 14
# change detection
CD_FRAC = 15
CD_LEN = 16
CD_SUM = 17
CD_SIGN = 18
CD_LAST_CHANGE = 19
# multi-bucket window
MB_POS = 20
MB_CNT = 21
MB_M = 22
MB_P = 23
MB_A = 24
MB_B = 25
# seasonality test window bookkeeping
WIN_SLOT_T = 26  # start of the slot being accumulated
WIN_SLOT_SUM = 27
WIN_SLOT_CNT = 28
WIN_FILLED = 29  # slots pushed so far
WIN_NEXT_TEST = 30  # time of the next periodicity test
DAY_ON = 31
DAY_EV = 32  # variance fraction the daily component explained when added
SEAS_VAR = 33  # EW mean squared residual, for the variance of the seasonal estimate
RESERVED0 = 34
RESERVED1 = 35
# arrays
MB_LEN = 12
MB_R = 36  # 12 residuals
KNOTS = 36
DAY_K = MB_R + MB_LEN  # 48: 36 knot values
DAY_W = DAY_K + KNOTS  # 84: 36 knot weights
WIN_LEN = 168
WIN = DAY_W + KNOTS  # 120: 168 slot means (NaN = no data)
NCOLS = WIN + WIN_LEN  # 288
NCOLS = ((NCOLS + 7) // 8) * 8  # 288, padded to whole cache lines

# parameter vector (one per bank)
P_SPAN = 0
P_SIDE = 1
P_NONNEG = 2
P_INTEGER = 3  # -1 learn from data, 0 continuous, 1 integer
P_SEASONAL = 4
P_MULTI = 5
P_DECAY = 6  # per-bucket decay rate of the residual priors
P_LEVEL_ALPHA = 7
P_SLOT = 8  # test-window slot length (s); 0 disables seasonality tests
P_MIN_CHANGE = 9  # buckets a level shift must persist before it is accepted
P_N_MIN = 10  # updates before probabilities are informative
NPARAMS = 16
