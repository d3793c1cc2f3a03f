"""Component ids, one constant each, so a typo fails at import instead of silently in the browser."""

# ---- the shell (every page) ----
LOCATION = "url"
HEALTH_POLL = "health-poll"
HEALTH = "health-store"  # {"reachable", "ready", "model", "loading", "error", "message", "deltas"}
MODEL = "model-store"  # GET /api/model, once the model serves (fetched again when its deltas change)
VOCAB = "vocab-store"  # GET /api/vocab: sites, rules, methods; the same for every user, fetched once per page load
STATUS = "model-status"
BANNER = "backend-banner"
PROMPT_TEXT = "prompt-text"
PROMPT_PRESET = "prompt-preset"
PROMPT_BOS = "prompt-bos"
PROMPT_RUN = "prompt-run"
PROMPT_INFO = "prompt-info"
DELTAS_BAR = "deltas-bar"  # shown while the served model carries a run's deltas
DELTAS_TEXT = "deltas-text"
DELTAS_CONTROLS = "deltas-controls"  # the buttons below, hidden once merged
DELTAS_TOGGLE = "deltas-toggle"
DELTAS_DETACH = "deltas-detach"
DELTAS_MERGE = "deltas-merge"  # a confirm dialog around the merge button
DELTAS_MESSAGE = "deltas-message"
DELTAS_RELOAD = "deltas-reload"  # after a merge: load the served model again, base weights
DELTAS_RELOAD_BOX = "deltas-reload-box"
QUEUE_BAR = "queue-bar"  # shown while this tab waits for the model or another request holds it long
QUEUE_POLL = "queue-poll"
QUEUE_TEXT = "queue-text"
QUEUE_CANCEL = "queue-cancel"  # stops this tab's own evaluation between windows
QUEUE_WORK = "queue-work"  # the id of this tab's evaluation that the button cancels

NAV = "nav-link"  # pattern id {"type": NAV, "path"}: a nav bar link, carrying its page's last query

# ---- per-user state (dcc.Store) ----
PROMPT = "prompt-store"  # {"text", "prepend_bos"}
SCAN = "scan-store"  # the last /api/scan answer, with the prompt it belongs to
SELECTED = "selected-store"  # {"layer", "site", "position", "dim", "token", "value"}
INTERVENTIONS = "interventions-store"  # [intervention dicts], the stack
EFFECT = "effect-store"  # the last /api/intervene answer
MASK = "mask-store"  # the current selection mask (the API's manifest, indices included)
JOB = "job-store"  # {"id"} of the fine-tune job this tab follows
VIEWS = "views-store"  # {page path: its last query string}, for the nav links
SHELL_QUERY = "shell-query"  # the URL keys every page carries (url_state.shell_query)
URL_READY = "url-ready"  # true once the shell has adopted what the URL it opened with carries
URL_SYNCED = "url-synced"  # the clientside URL writer's (unused) output

# ---- overview ----
OV_QUERY = "ov-query"  # the page's query string, on its way to the VIEWS store
OV_SITE = "ov-site"
OV_RULE = "ov-rule"
OV_CURVE = "ov-curve"
OV_SINK = "ov-sink"
OV_MASSIVE = "ov-massive"
OV_RECURRING = "ov-recurring"
OV_MESSAGE = "ov-message"
OV_LOADING = "ov-loading"

# ---- layer explorer ----
LX_QUERY = "lx-query"  # the page's query string, on its way to the VIEWS store
LX_LAYER = "lx-layer"
LX_SITE = "lx-site"
LX_VIEW = "lx-view"
LX_HEATMAP = "lx-heatmap"
LX_TOPDIMS = "lx-topdims"
LX_SELECTED = "lx-selected"
LX_VALUE = "lx-value"
LX_ZERO = "lx-zero"
LX_MEAN = "lx-mean"
LX_SCALE = "lx-scale"
LX_SET = "lx-set"
LX_RESET = "lx-reset"
LX_ADD_MASK = "lx-add-mask"
LX_EVAL = "lx-eval"
LX_STACK = "lx-stack"
LX_PPL = "lx-perplexity"
LX_PREDICTIONS = "lx-predictions"
LX_EFFECT_CURVE = "lx-effect-curve"
LX_EFFECT_SINK = "lx-effect-sink"
LX_MESSAGE = "lx-message"
LX_INTERVENE_MESSAGE = "lx-intervene-message"
LX_MASK_MESSAGE = "lx-mask-message"

# ---- attention ----
AT_QUERY = "at-query"  # the page's query string, on its way to the VIEWS store
AT_LAYER = "at-layer"
AT_HEAD = "at-head"
AT_PATTERN = "at-pattern"
AT_HEADS = "at-heads"
AT_SINK = "at-sink"
AT_MESSAGE = "at-message"

# ---- weights ----
WT_QUERY = "wt-query"  # the page's query string, on its way to the VIEWS store
WT_RULE = "wt-rule"
WT_K = "wt-k"
WT_LAYER = "wt-layer"
WT_MATRIX = "wt-matrix"
WT_HISTOGRAM = "wt-histogram"
WT_OUTLIERS = "wt-outliers"
WT_ACROSS = "wt-across"
WT_OVERVIEW = "wt-overview"
WT_MATRIX_HIST = "wt-matrix-histogram"
WT_LINES = "wt-lines"
WT_NOTE = "wt-note"
WT_ADD_MASK = "wt-add-mask"
WT_MESSAGE = "wt-message"
WT_MASK_MESSAGE = "wt-mask-message"
WT_LISTED = "wt-listed"  # the listed norm outliers of the shown layer, for "add to selection"

# ---- selection ----
SL_QUERY = "sl-query"  # the page's query string, on its way to the VIEWS store
SL_NAME = "sl-name"
SL_BUDGET = "sl-budget"
SL_RULES = "sl-rules"
SL_WINDOW = "sl-window"
SL_SUGGEST = "sl-suggest"
SL_CLEAR = "sl-clear"
SL_SUMMARY = "sl-summary"
SL_TABLE = "sl-table"
SL_EXPORT_JSON = "sl-export-json"
SL_EXPORT_ST = "sl-export-safetensors"
SL_DOWNLOAD = "sl-download"
SL_UPLOAD = "sl-upload"
SL_MESSAGE = "sl-message"

# ---- fine-tune ----
FT_QUERY = "ft-query"  # the page's query string, on its way to the VIEWS store
FT_BASELINES = "ft-baselines"
FT_STEPS = "ft-steps"
FT_LR = "ft-lr"
FT_DATA = "ft-data"
FT_CHECKPOINT = "ft-checkpoint"
FT_PROCESSES = "ft-processes"  # data-parallel run processes (empty: the API's default)
FT_SHARD = "ft-shard"  # ["fsdp"]: the model sharded over the run processes
FT_UPLOAD = "ft-upload"
FT_UPLOAD_NAME = "ft-upload-name"
FT_START = "ft-start"
FT_CANCEL = "ft-cancel"
FT_POLL = "ft-poll"
FT_PROGRESS = "ft-progress"
FT_STATUS = "ft-status"
FT_RESULTS = "ft-results"
FT_LOSS = "ft-loss"
FT_OUTLIERS = "ft-outliers"
FT_RUNS = "ft-runs"
FT_MESSAGE = "ft-message"
FT_MASK = "ft-mask"
FT_LIVE = "ft-live"  # loss points sampled from the job status while it runs
FT_APPLY = "ft-apply"  # pattern id {"type": FT_APPLY, "run", "method", "table"}: a run's "apply" button
FT_APPLY_MESSAGE = "ft-apply-message"
FT_JOBS = "ft-jobs"  # every job on the server, with follow and cancel
FT_LR_WARNING = "ft-lr-warning"
