"""The flat per-series state layout: one float64 row per series, named column offsets.

Version 6. A row holds bookkeeping, the residual one-of-n candidates (normal, log-normal, gamma,
Poisson, a 3-mode normal mixture) with their log weights, a 4-level trend ensemble, change
detection, the open anomaly episode, the multi-bucket window and prior, two seasonal components
(36 knots of value, count and residual variance each), the 168-slot expanding periodicity-test
window and the anomaly-characteristics model (ELASTIC_MODEL §3.4: the open episode's features and
two bivariate normal-Wishart models of past episodes' features).
511 columns = 4088 bytes per series.
"""

STATE_VERSION = 6
# Numba only re-validates a cached kernel against its own source file, not against these constants:
# `streamad.kernels` therefore keys its cache folder by a hash of all kernel sources.

# bookkeeping
T_FIRST = 0  # first bucket time (s), NaN before the first update
T_LAST = 1  # last update time (s)
N_EFF = 2  # number of updates, each counted by its weight (not aged)
FLAGS_INT = 3  # 1 while every value seen is an integer
FLAGS_NONNEG = 4  # 1 while every value seen is >= 0
DERATE_T = 5  # outliers are damped less until this time (after a model change)
OFFSET = 6  # shift that makes residuals positive for the log-normal and gamma candidates
AM_START = 7  # anomaly-characteristics model: first anomalous bucket (t / span) of the open episode; NaN = none
# residual candidates
NM = 8  # normal: normal-gamma (m, p, a, b) on the scaled residual
LN = 12  # log-normal: normal-gamma on log(residual + offset)
GA_N = 16  # gamma: weighted count, sum of y, sum of log y (y = residual + offset)
GA_S = 17
GA_L = 18
PO_A = 19  # Poisson: gamma(a, b) on the rate of the raw (integer, non-negative) values
PO_B = 20
MM = 21  # multimodal: 3 modes x (weight, m, p, a, b, then split candidates nL, mL, vL, nR, mR, vR)
MM_MODES = 3
MM_STRIDE = 11
LW = 54  # log weights: normal, log-normal, gamma, Poisson, multimodal
NCAND = 5
C_NORMAL, C_LOGNORMAL, C_GAMMA, C_POISSON, C_MULTIMODAL = 0, 1, 2, 3, 4
# trend ensemble: levels at 4 time scales, their EW squared one-step errors
NLEV = 4
LEV = 59
LEV_E = 63
LEV_N = 67
# change detection
CD_FRAC = 68
CD_LEN = 69
CD_SUM = 70
CD_SIGN = 71
AM_LEN = 72  # anomaly-characteristics model: the open episode's length (last - first anomalous bucket)
# multi-bucket window state and its normal-gamma prior
MB_POS = 73
MB_CNT = 74
MB_M = 75  # m, p, a, b
# periodicity test window bookkeeping
WIN_SLOT_T = 79  # start of the slot being accumulated
WIN_SLOT_SUM = 80
WIN_SLOT_CNT = 81
WIN_FILLED = 82  # slots pushed at the current resolution
WIN_NEXT_TEST = 83  # time of the next periodicity test
WIN_LEVEL = 84  # resolution: slot length = base slot * 2^level
EP_LP = 85  # open anomaly episode: sign of its errors x its most extreme -ln p so far; 0 = none
OUT_RATE = 86  # EW rate of one-tailed p < 1e-3 updates (above 2e-3: outliers recur, `series.outlier_derate`)
# seasonal components: on flag, period (s), variance fraction explained when added, time added,
# EW squared prediction error with and without the component (for removal)
NCOMP = 2
COMP = 87  # per component: ON, PERIOD, EV, T_ADDED, ERR_WITH, ERR_WITHOUT
COMP_STRIDE = 6
# arrays
MB_LEN = 12
MB_R = 100  # 12 residuals
KNOTS = 36
SEAS = MB_R + MB_LEN  # 112: per component 36 values, 36 counts, 36 residual variances
SEAS_STRIDE = 3 * KNOTS
WIN_LEN = 168
WIN = SEAS + NCOMP * SEAS_STRIDE  # 328: 168 slot means (NaN = no data)
V5_NCOLS = WIN + WIN_LEN  # 496: the end of a version 5 row (`bank.migrate_v5`)
# anomaly-characteristics model (ELASTIC_MODEL §3.4, `anomaly`; also AM_START and AM_LEN, in the
# columns of version 5's never-read update counter and last-change time): the open episode's sum
# of prediction errors (its sign picks the model), number and mean of its absolute errors; then
# per sign (positive, negative) a bivariate normal-Wishart model of the features (length, mean
# |error|): weight (precision = degrees of freedom), mean (2), scatter matrix (11, 12, 22)
AM = V5_NCOLS  # 496
AM_SUM = AM
AM_N = AM + 1
AM_ABS = AM + 2
AM_MOD = AM + 3  # 2 models x AM_MOD_STRIDE
AM_MOD_STRIDE = 6
# 511, not padded to whole cache lines: 512 columns and a snapshot's header would pass the 4 KB
# per series budget
NCOLS = AM_MOD + 2 * AM_MOD_STRIDE
MAX_WIN_LEVEL = 2

# parameter vector (one per bank)
P_SPAN = 0
P_SIDE = 1
P_NONNEG = 2
P_INTEGER = 3  # -1 learn from data, 0 continuous, 1 integer
P_SEASONAL = 4
P_MULTI = 5
P_DECAY = 6  # per-bucket decay rate of the residual priors
P_SLOT = 7  # base test-window slot length (s); 0 disables seasonality tests
P_MIN_CHANGE = 8  # buckets a level shift must persist before it is accepted
P_N_MIN = 9  # updates before probabilities are informative
P_LEV_ALPHA = 10  # 4 learning rates of the trend levels (10..13)
NPARAMS = 16
