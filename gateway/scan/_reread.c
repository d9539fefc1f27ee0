/* gateway.scan._reread: the shape matcher's re-reads of Hyperscan hits, in C with PCRE2.

Purpose. Hyperscan finds where each identifier shape may match (gateway/scan/shapes.py,
gateway/scan/matchers.py); the shape's pattern is then re-read at or around each hit to
find the match Python's `re` would find there. In compiled Python, that step cost a dense
2 KB lab order about 137k instructions, more than the Hyperscan scan itself: ~16 `re`
calls, each building a Match object, and the lists and tuples around them. This module
does the same walk over the hits with PCRE2 (Debian's libpcre2-8, JIT-compiled
patterns), keeps the candidates in a C array, and builds only the final tuples.

Contract (gateway/scan/matchers.py's HyperscanMatcher relies on it):
- `Rereader(plans)`: one plan per shape, a tuple `(name, mode, pattern, caseless, before,
  max_len, alphabet, locate, offset)` as matchers._Plan holds them: `name` is put in the
  candidates as it is; `mode` is matchers' _EXACT, _LOCATE, _WINDOW or _SPAN; `pattern`
  and `locate` are PCRE2 expressions as bytes (`locate` empty when unused; matchers turns
  Python's `\Z` into PCRE2's `\z`); `alphabet` is a 256-byte table or empty.
- `Rereader.candidates(data, groups)` takes the folded text's bytes and the hits of
  `Database.scan_grouped(data)` (gateway/scan/_hyperscan.c) and returns the candidates,
  `(name, start, end)` tuples, in the order, and with the values, that
  `HyperscanMatcher._reread` returns for the same hits (tests/scan/test_reread_native.py
  compares them).
- `Rereader.candidates_by_field(data, groups, starts, lengths)` returns the same
  candidates as `matchers.split_by_field` deals them to a message's fields (field i is
  data[starts[i]:starts[i] + lengths[i]], the fields in order and apart): per field, a
  list sorted by start, then end (stably), offsets relative to the field, a candidate
  not within one field dropped. (Sorting and splitting them in compiled Python cost a
  dense order ~27k instructions.)
- `Rereader.candidates_by_field_packed(data, packed, starts, lengths)` returns the same
  as `candidates_by_field` for the hits of `Database.scan_grouped_packed(data)` (the same
  groups as native `long long` triples (id, start, end), grouped by id, each group's
  spans sorted): no int objects made and read back per hit.
- Wrong arguments raise TypeError or ValueError; a failed PCRE2 match raises
  RuntimeError with PCRE2's error code. No message quotes the text.

Invariants. PCRE2 and Python's `re` (re.ASCII) agree on what the shapes use: classes,
bounded greedy repeats, ordered alternation, `\b` and `\d` over ASCII, ASCII-only
caselessness, `pos`/`endpos` as start offset and subject length. The text is the folded
text, ASCII. Every offset read is checked against the text's length, and no pattern
may match the empty string (checked when built), so every walk advances. The GIL is held
throughout (a message's re-reads take microseconds), so one match-data block and one JIT
stack per Rereader serve every call: each match's bounds are read from the match data
right after `pcre2_match` returns, before anything that could run Python code.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* matchers.py's modes. */
#define MODE_EXACT 0
#define MODE_LOCATE 1
#define MODE_WINDOW 2
#define MODE_SPAN 3

/* A compiled pattern, and whether PCRE2's JIT compiled it. */
typedef struct {
    pcre2_code *code;
    int jit;
} Pattern;

typedef struct {
    PyObject *name;
    int mode;
    Pattern match;  /* the pattern, anchored at the start offset (re.match) */
    Pattern search; /* the pattern (re.search) */
    Pattern locate; /* the locator (re.search); unset unless MODE_LOCATE */
    Py_ssize_t before;
    Py_ssize_t max_len;
    Py_ssize_t offset;
    int has_alphabet;
    unsigned char alphabet[256];
} Plan;

typedef struct {
    PyObject_HEAD
    Plan *plans;
    Py_ssize_t plan_count;
    pcre2_match_data *match_data;
    pcre2_match_context *match_context;
    pcre2_jit_stack *jit_stack;
} Rereader;

/* A candidate: its span, and the plan (shape) it is of. */
typedef struct {
    Py_ssize_t start;
    Py_ssize_t end;
    Py_ssize_t plan;
} Candidate;

/* One text being re-read, and the candidates found so far, in order. */
typedef struct {
    const unsigned char *data;
    Py_ssize_t length;
    Candidate *found;
    Py_ssize_t count;
    Py_ssize_t capacity;
    Py_ssize_t plan; /* the plan of the group being read */
    pcre2_match_data *match_data;
    pcre2_match_context *match_context;
} Reading;

static void Rereader_dealloc(Rereader *self)
{
    for (Py_ssize_t i = 0; i < self->plan_count; i++) {
        Py_XDECREF(self->plans[i].name);
        pcre2_code_free(self->plans[i].match.code);
        pcre2_code_free(self->plans[i].search.code);
        pcre2_code_free(self->plans[i].locate.code);
    }
    PyMem_Free(self->plans);
    pcre2_match_data_free(self->match_data);
    pcre2_match_context_free(self->match_context);
    pcre2_jit_stack_free(self->jit_stack);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* PCRE2's JIT runs a match anchored at its start offset only when the pattern was
   compiled anchored (PCRE2_ANCHORED is not a JIT match option): re.match's patterns are
   compiled so. */
static int compile_pattern(Pattern *pattern, PyObject *source, int caseless, int anchored)
{
    if (!PyBytes_Check(source)) {
        PyErr_SetString(PyExc_TypeError, "patterns must be bytes");
        return -1;
    }
    int error;
    PCRE2_SIZE error_offset;
    uint32_t options = (caseless ? PCRE2_CASELESS : 0) | (anchored ? PCRE2_ANCHORED : 0);
    pattern->code = pcre2_compile((PCRE2_SPTR)PyBytes_AS_STRING(source),
                                  (PCRE2_SIZE)PyBytes_GET_SIZE(source), options, &error,
                                  &error_offset, NULL);
    if (pattern->code == NULL) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error, message, sizeof message);
        PyErr_Format(PyExc_ValueError, "pattern at offset %zu: %s", (size_t)error_offset,
                     (const char *)message);
        return -1;
    }
    /* A pattern that may match the empty string would stall the window walk (as it
       would the Python's): no shape's does. */
    uint32_t shortest = 0;
    if (pcre2_pattern_info(pattern->code, PCRE2_INFO_MINLENGTH, &shortest) != 0
        || shortest == 0) {
        PyErr_SetString(PyExc_ValueError, "a pattern must not match the empty string");
        return -1;
    }
    /* Without JIT support (another CPU), pcre2_match interprets: same results, slower. */
    pattern->jit = pcre2_jit_compile(pattern->code, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

static int read_plan(Plan *plan, PyObject *item)
{
    PyObject *name, *pattern, *alphabet, *locate;
    int mode, caseless;
    Py_ssize_t before, max_len, offset;
    if (!PyTuple_Check(item)
        || !PyArg_ParseTuple(item, "OiO!pnnO!O!n", &name, &mode, &PyBytes_Type, &pattern,
                             &caseless, &before, &max_len, &PyBytes_Type, &alphabet,
                             &PyBytes_Type, &locate, &offset)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "a plan is a tuple");
        }
        return -1;
    }
    if (mode < MODE_EXACT || mode > MODE_SPAN || before < 0 || max_len < 0 || offset < 0
        || (PyBytes_GET_SIZE(alphabet) != 0 && PyBytes_GET_SIZE(alphabet) != 256)
        || (mode == MODE_LOCATE) != (PyBytes_GET_SIZE(locate) != 0)) {
        PyErr_SetString(PyExc_ValueError, "invalid plan");
        return -1;
    }
    plan->mode = mode;
    plan->before = before;
    plan->max_len = max_len;
    plan->offset = offset;
    plan->has_alphabet = PyBytes_GET_SIZE(alphabet) == 256;
    if (plan->has_alphabet) {
        memcpy(plan->alphabet, PyBytes_AS_STRING(alphabet), 256);
    }
    if (compile_pattern(&plan->match, pattern, caseless, 1) < 0
        || compile_pattern(&plan->search, pattern, caseless, 0) < 0
        || (mode == MODE_LOCATE && compile_pattern(&plan->locate, locate, 0, 0) < 0)) {
        return -1; /* the locator is case-sensitive */
    }
    Py_INCREF(name);
    plan->name = name;
    return 0;
}

static int Rereader_init(Rereader *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"plans", NULL};
    PyObject *plans;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!", keywords, &PyList_Type, &plans)) {
        return -1;
    }
    if (self->plans != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Rereader is already built");
        return -1;
    }
    Py_ssize_t count = PyList_GET_SIZE(plans);
    self->plans = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Plan));
    if (self->plans == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->plan_count = count;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (read_plan(&self->plans[i], PyList_GET_ITEM(plans, i)) < 0) {
            return -1;
        }
    }
    /* One match (the whole one: no shape has a capture group that is read here). */
    self->match_data = pcre2_match_data_create(1, NULL);
    self->match_context = pcre2_match_context_create(NULL);
    /* JIT-compiled matches backtrack on this stack: 32 KB first, up to 1 MB. */
    self->jit_stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
    if (self->match_data == NULL || self->match_context == NULL || self->jit_stack == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pcre2_jit_stack_assign(self->match_context, NULL, self->jit_stack);
    return 0;
}

/* Match `pattern` in data[:endpos] from `position` (anchored there if compiled so, as
   re.match; else searching forward, as re.search). 1 with the match's bounds, 0 for no
   match, -1 with an exception set. */
static int find(Reading *reading, const Pattern *pattern, Py_ssize_t position,
                Py_ssize_t endpos, Py_ssize_t *start, Py_ssize_t *end)
{
    if (endpos > reading->length) {
        endpos = reading->length;
    }
    if (position < 0 || position > endpos) {
        return 0; /* re returns None when pos is past endpos */
    }
    /* pcre2_jit_match skips pcre2_match's checks of its arguments: checked above. */
    int result = (pattern->jit ? pcre2_jit_match : pcre2_match)(
        pattern->code, reading->data, (PCRE2_SIZE)endpos, (PCRE2_SIZE)position, 0,
        reading->match_data, reading->match_context);
    if (result == PCRE2_ERROR_NOMATCH) {
        return 0;
    }
    if (result < 0) {
        PyErr_Format(PyExc_RuntimeError, "shape re-read failed (PCRE2 error %d)", result);
        return -1;
    }
    PCRE2_SIZE *bounds = pcre2_get_ovector_pointer(reading->match_data);
    *start = (Py_ssize_t)bounds[0];
    *end = (Py_ssize_t)bounds[1];
    return 1;
}

static int add(Reading *reading, Py_ssize_t start, Py_ssize_t end)
{
    if (reading->count == reading->capacity) {
        Py_ssize_t capacity = reading->capacity ? reading->capacity * 2 : 64;
        Candidate *grown = PyMem_Realloc(reading->found, (size_t)capacity * sizeof(Candidate));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        reading->found = grown;
        reading->capacity = capacity;
    }
    reading->found[reading->count++] = (Candidate){start, end, reading->plan};
    return 0;
}

/* The shape's match at `start` (re.match, within max_len), if any, added as a candidate;
   `last_end` moves to its end. */
static int match_at(Reading *reading, const Plan *plan, Py_ssize_t start, Py_ssize_t *last_end)
{
    Py_ssize_t match_start, match_end;
    int found = find(reading, &plan->match, start, start + plan->max_len + 1, &match_start,
                     &match_end);
    if (found <= 0) {
        return found;
    }
    *last_end = match_end;
    return add(reading, start, match_end);
}

/* matchers._take_spans: each hit of a span-is-match shape is its match, unless its start
   was reported with several ends (re-read then). Spans are distinct and sorted. */
static int take_spans(Reading *reading, const Plan *plan, const Py_ssize_t *spans,
                      Py_ssize_t count)
{
    Py_ssize_t last_end = 0, i = 0;
    while (i < count) {
        Py_ssize_t start = spans[i], end = spans[i + 1], j = i + 2;
        while (j < count && spans[j] == start) {
            j += 2;
        }
        int single = j == i + 2;
        i = j;
        if (start < last_end) {
            continue;
        }
        if (single) {
            last_end = end;
            if (add(reading, start, end) < 0) {
                return -1;
            }
            continue;
        }
        if (match_at(reading, plan, start, &last_end) < 0) {
            return -1;
        }
    }
    return 0;
}

/* matchers._after_barrier: where the run of alphabet characters ending at `high` starts,
   not before `low`. */
static Py_ssize_t after_barrier(const Reading *reading, const Plan *plan, Py_ssize_t low,
                                Py_ssize_t high)
{
    Py_ssize_t position = high;
    while (position > low && plan->alphabet[reading->data[position - 1]]) {
        position--;
    }
    return position;
}

/* re.ASCII's \w: [A-Za-z0-9_]. */
static int is_word_code(unsigned char code)
{
    return (code >= '0' && code <= '9') || (code >= 'A' && code <= 'Z')
           || (code >= 'a' && code <= 'z') || code == '_';
}

static int compare_offsets(const void *left, const void *right)
{
    Py_ssize_t a = *(const Py_ssize_t *)left, b = *(const Py_ssize_t *)right;
    return (a > b) - (a < b);
}

/* Offsets, grown as needed. */
typedef struct {
    Py_ssize_t *values;
    Py_ssize_t count;
    Py_ssize_t capacity;
} Offsets;

static int append_offset(Offsets *offsets, Py_ssize_t value)
{
    if (offsets->count == offsets->capacity) {
        Py_ssize_t capacity = offsets->capacity ? offsets->capacity * 2 : 16;
        Py_ssize_t *grown = PyMem_Realloc(offsets->values, (size_t)capacity * sizeof(Py_ssize_t));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        offsets->values = grown;
        offsets->capacity = capacity;
    }
    offsets->values[offsets->count++] = value;
    return 0;
}

/* matchers._located_starts: every start from which the locator reaches a trigger's
   anchor, appended to `starts`, then sorted and made distinct. */
static int located_starts(Reading *reading, const Plan *plan, const Py_ssize_t *hits,
                          Py_ssize_t count, Offsets *starts)
{
    for (Py_ssize_t h = 0; h < count; h++) {
        Py_ssize_t anchor = hits[h] + plan->offset;
        if (anchor > reading->length) {
            anchor = reading->length; /* a trigger ends inside the text: never so */
        }
        Py_ssize_t position = anchor - plan->before > 0 ? anchor - plan->before : 0;
        if (plan->has_alphabet) {
            position = after_barrier(reading, plan, position, anchor);
        }
        Py_ssize_t start, end;
        int found;
        while ((found = find(reading, &plan->locate, position, anchor, &start, &end)) > 0) {
            if (append_offset(starts, start) < 0) {
                return -1;
            }
            /* The locator opens with \b: no later start inside a word run reaches it. */
            Py_ssize_t p = start;
            while (p < anchor && is_word_code(reading->data[p])) {
                p++;
            }
            if (p == anchor) {
                break;
            }
            position = start + 1;
        }
        if (found < 0) {
            return -1;
        }
    }
    if (starts->count > 1) {
        qsort(starts->values, (size_t)starts->count, sizeof(Py_ssize_t), compare_offsets);
    }
    Py_ssize_t distinct = 0;
    for (Py_ssize_t i = 0; i < starts->count; i++) {
        if (distinct == 0 || starts->values[distinct - 1] != starts->values[i]) {
            starts->values[distinct++] = starts->values[i];
        }
    }
    starts->count = distinct;
    return 0;
}

/* The exact-start loop of HyperscanMatcher._reread: the pattern tried at each start,
   skipping starts inside the previous match. */
static int read_at(Reading *reading, const Plan *plan, const Py_ssize_t *starts,
                   Py_ssize_t count)
{
    Py_ssize_t last_end = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (starts[i] >= last_end && match_at(reading, plan, starts[i], &last_end) < 0) {
            return -1;
        }
    }
    return 0;
}

/* matchers._read_windows: the windows where a match may start, searched as finditer
   over the whole text would. `lows` has room for `count` offsets. */
static int read_windows(Reading *reading, const Plan *plan, const Py_ssize_t *hits,
                        Py_ssize_t count, Py_ssize_t *lows)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t low = hits[i] - plan->before > 0 ? hits[i] - plan->before : 0;
        lows[i] = plan->has_alphabet ? after_barrier(reading, plan, low, hits[i]) : low;
    }
    Py_ssize_t first = 0;
    while (first < count) {
        Py_ssize_t low = lows[first], high = hits[first], last = first + 1;
        while (last < count && lows[last] <= high + plan->max_len) {
            high = hits[last];
            last++;
        }
        Py_ssize_t position = low, limit = high + plan->max_len + 1, pending = first;
        Py_ssize_t start, end;
        int found;
        while ((found = find(reading, &plan->search, position, limit, &start, &end)) > 0
               && start <= high) {
            if (add(reading, start, end) < 0) {
                return -1;
            }
            if (end > high) {
                break;
            }
            while (pending < count - 1 && hits[pending] < end) {
                pending++;
            }
            position = end > lows[pending] ? end : lows[pending];
        }
        if (found < 0) {
            return -1;
        }
        first = last;
    }
    return 0;
}

/* A list of offsets, read; NULL with an exception set. */
static Py_ssize_t *read_offsets(PyObject *list, Py_ssize_t count)
{
    Py_ssize_t *values = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(Py_ssize_t));
    if (values == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        values[i] = PyLong_AsSsize_t(PyList_GET_ITEM(list, i));
        if (values[i] == -1 && PyErr_Occurred()) {
            PyMem_Free(values);
            return NULL;
        }
    }
    return values;
}

/* Whether `count` values are start, end pairs, sorted by start, within [0, length];
   else ValueError. */
static int check_spans(const Py_ssize_t *values, Py_ssize_t count, Py_ssize_t length)
{
    for (Py_ssize_t i = 0; i < count; i += 2) {
        if (values[i] < 0 || values[i] > values[i + 1] || values[i + 1] > length
            || (i > 0 && values[i] < values[i - 2])) {
            PyErr_SetString(PyExc_ValueError, "spans must be sorted and within the text");
            return -1;
        }
    }
    return 0;
}

/* A group's spans as C offsets, checked: pairs, each within the text. */
static Py_ssize_t *read_spans(PyObject *spans, Py_ssize_t length, Py_ssize_t *count)
{
    if (!PyList_Check(spans) || PyList_GET_SIZE(spans) % 2 != 0) {
        PyErr_SetString(PyExc_TypeError, "spans must be a list of start, end pairs");
        return NULL;
    }
    *count = PyList_GET_SIZE(spans);
    Py_ssize_t *values = read_offsets(spans, *count);
    if (values != NULL && check_spans(values, *count, length) < 0) {
        PyMem_Free(values);
        return NULL;
    }
    return values;
}

static int read_group(Reading *reading, const Plan *plan, const Py_ssize_t *spans,
                      Py_ssize_t count)
{
    if (plan->mode == MODE_SPAN) {
        return take_spans(reading, plan, spans, count);
    }
    /* The distinct hit starts (sorted: the spans are), and room for the window lows. */
    Py_ssize_t hit_count = 0;
    Py_ssize_t *hits = PyMem_Malloc((size_t)(count + 1) * sizeof(Py_ssize_t));
    if (hits == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i += 2) {
        if (hit_count == 0 || hits[hit_count - 1] != spans[i]) {
            hits[hit_count++] = spans[i];
        }
    }
    int result;
    if (plan->mode == MODE_WINDOW) {
        result = read_windows(reading, plan, hits, hit_count, hits + count / 2);
    } else if (plan->mode == MODE_LOCATE) {
        Offsets starts = {NULL, 0, 0};
        result = located_starts(reading, plan, hits, hit_count, &starts);
        if (result == 0) {
            result = read_at(reading, plan, starts.values, starts.count);
        }
        PyMem_Free(starts.values);
    } else {
        result = read_at(reading, plan, hits, hit_count);
    }
    PyMem_Free(hits);
    return result;
}

static int check_built(const Rereader *self)
{
    if (self->plans == NULL || self->match_data == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Rereader is not built");
        return -1;
    }
    return 0;
}

static int check_plan_index(const Rereader *self, Py_ssize_t index)
{
    if (index < 0 || index >= self->plan_count) {
        PyErr_SetString(PyExc_ValueError, "a group's id names no plan");
        return -1;
    }
    return 0;
}

/* Every group's hits re-read into `reading` (candidates in group order). */
static int read_groups(Rereader *self, Reading *reading, PyObject *groups)
{
    if (check_built(self) < 0) {
        return -1;
    }
    for (Py_ssize_t g = 0; g < PyList_GET_SIZE(groups); g++) {
        PyObject *group = PyList_GET_ITEM(groups, g);
        if (!PyTuple_Check(group) || PyTuple_GET_SIZE(group) != 2) {
            PyErr_SetString(PyExc_TypeError, "a group is an (id, spans) tuple");
            return -1;
        }
        Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(group, 0));
        if ((index == -1 && PyErr_Occurred()) || check_plan_index(self, index) < 0) {
            return -1;
        }
        Py_ssize_t count;
        Py_ssize_t *spans = read_spans(PyTuple_GET_ITEM(group, 1), reading->length, &count);
        if (spans == NULL) {
            return -1;
        }
        reading->plan = index;
        int result = read_group(reading, &self->plans[index], spans, count);
        PyMem_Free(spans);
        if (result < 0) {
            return -1;
        }
    }
    return 0;
}

/* The packed groups' hits (see the contract) re-read into `reading`, as read_groups. */
static int read_packed_groups(Rereader *self, Reading *reading, const Py_buffer *packed)
{
    const Py_ssize_t width = 3 * (Py_ssize_t)sizeof(long long);
    if (check_built(self) < 0) {
        return -1;
    }
    if (packed->len % width != 0) {
        PyErr_SetString(PyExc_ValueError, "packed hits must be (id, start, end) triples");
        return -1;
    }
    Py_ssize_t hits = packed->len / width;
    /* The triples copied out (the buffer may not be aligned for long long); then one
       group's spans at a time, as start, end pairs. */
    long long *values = PyMem_Malloc((size_t)(hits ? 3 * hits : 1) * sizeof(long long));
    Py_ssize_t *spans = PyMem_Malloc((size_t)(hits ? 2 * hits : 1) * sizeof(Py_ssize_t));
    if (values == NULL || spans == NULL) {
        PyMem_Free(values);
        PyMem_Free(spans);
        PyErr_NoMemory();
        return -1;
    }
    if (hits) {
        memcpy(values, packed->buf, (size_t)packed->len);
    }
    int result = 0;
    Py_ssize_t first = 0;
    while (result == 0 && first < hits) {
        long long id = values[3 * first];
        Py_ssize_t count = 0, last = first;
        for (; last < hits && values[3 * last] == id; last++) {
            spans[count++] = (Py_ssize_t)values[3 * last + 1];
            spans[count++] = (Py_ssize_t)values[3 * last + 2];
        }
        if (check_plan_index(self, (Py_ssize_t)id) < 0
            || check_spans(spans, count, reading->length) < 0) {
            result = -1;
        } else {
            reading->plan = (Py_ssize_t)id;
            result = read_group(reading, &self->plans[id], spans, count);
        }
        first = last;
    }
    PyMem_Free(values);
    PyMem_Free(spans);
    return result;
}

/* (name, start - base, end - base) */
static PyObject *candidate_tuple(const Rereader *self, const Candidate *found, Py_ssize_t base)
{
    PyObject *name = self->plans[found->plan].name;
    PyObject *candidate = PyTuple_New(3);
    if (candidate == NULL) {
        return NULL;
    }
    Py_INCREF(name);
    PyTuple_SET_ITEM(candidate, 0, name);
    PyObject *low = PyLong_FromSsize_t(found->start - base);
    PyTuple_SET_ITEM(candidate, 1, low);
    PyObject *high = PyLong_FromSsize_t(found->end - base);
    PyTuple_SET_ITEM(candidate, 2, high);
    if (low == NULL || high == NULL) {
        Py_DECREF(candidate);
        return NULL;
    }
    return candidate;
}

static PyObject *Rereader_candidates(Rereader *self, PyObject *args)
{
    Py_buffer view;
    PyObject *groups, *list = NULL;
    if (!PyArg_ParseTuple(args, "y*O!:candidates", &view, &PyList_Type, &groups)) {
        return NULL;
    }
    Reading reading = {view.buf, view.len, NULL, 0, 0, 0, self->match_data,
                       self->match_context};
    if (read_groups(self, &reading, groups) == 0 && (list = PyList_New(reading.count))) {
        for (Py_ssize_t i = 0; i < reading.count; i++) {
            PyObject *candidate = candidate_tuple(self, &reading.found[i], 0);
            if (candidate == NULL) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, i, candidate);
        }
    }
    PyMem_Free(reading.found);
    PyBuffer_Release(&view);
    return list;
}

/* By start, then end, then order found: Python's stable sort by (start, end). */
static int compare_candidates(const void *left, const void *right)
{
    const Candidate *a = *(Candidate *const *)left, *b = *(Candidate *const *)right;
    if (a->start != b->start) {
        return a->start < b->start ? -1 : 1;
    }
    if (a->end != b->end) {
        return a->end < b->end ? -1 : 1;
    }
    return (a > b) - (a < b);
}

/* The candidates sorted by start, then end (stable), and dealt to the fields that hold
   them: matchers.split_by_field. */
static PyObject *split_by_field(const Rereader *self, Reading *reading, const Py_ssize_t *starts,
                                const Py_ssize_t *lengths, Py_ssize_t fields)
{
    PyObject *lists = PyList_New(fields);
    if (lists == NULL) {
        return NULL;
    }
    for (Py_ssize_t f = 0; f < fields; f++) {
        PyObject *list = PyList_New(0);
        if (list == NULL) {
            Py_DECREF(lists);
            return NULL;
        }
        PyList_SET_ITEM(lists, f, list);
    }
    Candidate **ordered = PyMem_Malloc((size_t)(reading->count ? reading->count : 1)
                                       * sizeof(Candidate *));
    if (ordered == NULL) {
        Py_DECREF(lists);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < reading->count; i++) {
        ordered[i] = &reading->found[i];
    }
    if (reading->count > 1) {
        qsort(ordered, (size_t)reading->count, sizeof(Candidate *), compare_candidates);
    }
    Py_ssize_t slot = 0;
    for (Py_ssize_t i = 0; i < reading->count; i++) {
        const Candidate *found = ordered[i];
        while (slot + 1 < fields && starts[slot + 1] <= found->start) {
            slot++;
        }
        if (found->start < starts[slot] || found->end > starts[slot] + lengths[slot]) {
            continue; /* across a field's end (no shape matches NUL: never so) */
        }
        PyObject *candidate = candidate_tuple(self, found, starts[slot]);
        if (candidate == NULL || PyList_Append(PyList_GET_ITEM(lists, slot), candidate) < 0) {
            Py_XDECREF(candidate);
            Py_DECREF(lists);
            lists = NULL;
            break;
        }
        Py_DECREF(candidate);
    }
    PyMem_Free(ordered);
    return lists;
}

/* candidates_by_field and candidates_by_field_packed: the fields read and checked, the
   hits (`groups`, a list, or `packed`, a buffer) re-read, then split. */
static PyObject *candidates_of_fields(Rereader *self, const Py_buffer *view, PyObject *groups,
                                      const Py_buffer *packed, PyObject *start_list,
                                      PyObject *length_list)
{
    PyObject *lists = NULL;
    Py_ssize_t fields = PyList_GET_SIZE(start_list);
    Py_ssize_t *starts = NULL, *lengths = NULL;
    Reading reading = {view->buf, view->len, NULL, 0, 0, 0, self->match_data,
                       self->match_context};
    if (fields == 0 || PyList_GET_SIZE(length_list) != fields) {
        PyErr_SetString(PyExc_ValueError, "starts and lengths must be non-empty, of one length");
        goto done;
    }
    starts = read_offsets(start_list, fields);
    lengths = starts == NULL ? NULL : read_offsets(length_list, fields);
    if (lengths == NULL) {
        goto done;
    }
    for (Py_ssize_t f = 0; f < fields; f++) {
        if (starts[f] < (f ? starts[f - 1] + lengths[f - 1] : 0) || lengths[f] < 0
            || starts[f] + lengths[f] > view->len) {
            PyErr_SetString(PyExc_ValueError, "fields must be in order, apart, within the text");
            goto done;
        }
    }
    if ((packed ? read_packed_groups(self, &reading, packed) : read_groups(self, &reading, groups))
        == 0) {
        lists = split_by_field(self, &reading, starts, lengths, fields);
    }
done:
    PyMem_Free(starts);
    PyMem_Free(lengths);
    PyMem_Free(reading.found);
    return lists;
}

static PyObject *Rereader_candidates_by_field(Rereader *self, PyObject *args)
{
    Py_buffer view;
    PyObject *groups, *start_list, *length_list;
    if (!PyArg_ParseTuple(args, "y*O!O!O!:candidates_by_field", &view, &PyList_Type, &groups,
                          &PyList_Type, &start_list, &PyList_Type, &length_list)) {
        return NULL;
    }
    PyObject *lists = candidates_of_fields(self, &view, groups, NULL, start_list, length_list);
    PyBuffer_Release(&view);
    return lists;
}

static PyObject *Rereader_candidates_by_field_packed(Rereader *self, PyObject *args)
{
    Py_buffer view, packed;
    PyObject *start_list, *length_list;
    if (!PyArg_ParseTuple(args, "y*y*O!O!:candidates_by_field_packed", &view, &packed,
                          &PyList_Type, &start_list, &PyList_Type, &length_list)) {
        return NULL;
    }
    PyObject *lists = candidates_of_fields(self, &view, NULL, &packed, start_list, length_list);
    PyBuffer_Release(&packed);
    PyBuffer_Release(&view);
    return lists;
}

static PyMethodDef Rereader_methods[] = {
    {"candidates", (PyCFunction)Rereader_candidates, METH_VARARGS,
     "candidates(data, groups) -> list of (name, start, end): the hits re-read"},
    {"candidates_by_field", (PyCFunction)Rereader_candidates_by_field, METH_VARARGS,
     "candidates_by_field(data, groups, starts, lengths) -> per field, its candidates"},
    {"candidates_by_field_packed", (PyCFunction)Rereader_candidates_by_field_packed,
     METH_VARARGS,
     "candidates_by_field_packed(data, packed, starts, lengths) -> per field, its candidates"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RereaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.scan._reread.Rereader",
    .tp_doc = "The shapes' patterns, compiled by PCRE2, and how each shape's hits are read.",
    .tp_basicsize = sizeof(Rereader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Rereader_init,
    .tp_dealloc = (destructor)Rereader_dealloc,
    .tp_methods = Rereader_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.scan._reread",
    .m_doc = "The shape matcher's re-reads of Hyperscan hits, with PCRE2.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__reread(void)
{
    if (PyType_Ready(&RereaderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    PCRE2_UCHAR version[64];
    if (pcre2_config(PCRE2_CONFIG_VERSION, version) < 0) {
        version[0] = 0;
    }
    if (PyModule_AddObjectRef(m, "Rereader", (PyObject *)&RereaderType) < 0
        || PyModule_AddStringConstant(m, "PCRE2_VERSION", (const char *)version) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
