/* gateway.scan._hyperscan: Hyperscan block-mode scanning that returns the hits as a list.

Purpose. The scanning core runs Hyperscan over every message, up to four times (shapes
and roster literals, on the first read and on the verification of each rewritten copy).
The python-hyperscan binding calls a Python function for every hit, and around the scan
it releases the GIL, so each hit re-acquires it (PyGILState_Ensure): in the gateway,
where the audit writer and the spool's sync thread wait for the GIL, every hit is a
chance to hand it over and wait to get it back. This module does the same scan with a
C callback that only records the hit, and builds the result list once at the end.

Contract (gateway/scan/matchers.py relies on it):
- `Database(expressions, ids, flags, literal=False, *, triggers=[])` compiles a
  block-mode database: regular expressions (`hs_compile_multi`) or, with `literal=True`,
  literals (`hs_compile_lit_multi`; `flags` is then one int for all). Expressions are
  bytes. `triggers` lists `(shape name, id)` pairs: the shapes whose trigger hits the
  walk of _triggers.h finds in the same scan, each reported with its id (TRIGGERS names
  the shapes it knows). With triggers, `expressions` may be empty (never with literals).
- `Database.scan(data)` returns every hit as an `(id, start, end)` tuple, in the order
  Hyperscan reports them (by end, but for a match whose start it tracks, which it may
  report after later ones), as the binding's callback would have seen them; the walked
  triggers' hits follow, in the order the walk finds them.
- `Database.scan_grouped(data)` returns the same hits grouped by id: one `(id, spans)`
  tuple per id that fired, by ascending id, `spans` the flat list `[start, end, start,
  end, ...]` of its distinct (start, end) pairs sorted by start, then end. (The shape
  matcher reads each shape's hits in that order: sorting and packing them in Python cost
  it more than the re-reads of some shapes.)
- `Database.scan_grouped_packed(data)` returns the same distinct hits in the same order
  as `scan_grouped`, packed in a bytes object: for each, three native `long long` (id,
  start, end), one after the other (what gateway/scan/_reread.c's
  `candidates_by_field_packed` reads; an in-process format, never stored). As lists, the
  hits cost two ints each, most of them allocated (offsets past 256), read back at once
  by the re-reads: ~18k instructions a dense order.
- `Database.scan_by_field(data, starts, lengths, trim)` returns the hits of a text made
  of fields (field i is [starts[i], starts[i] + lengths[i]), `starts` ascending), per
  field: a list per field of `(id, start - base, end - trim - base)` for each hit whose
  start lies in the field (`base` its start) and whose end less `trim` does not pass its
  end (nor falls before the start), in report order. (The roster literals: a hit on
  " word " in the padded word view is the word at [start, end - 2) of the text, and a
  word across two fields is none. Split in Python, each hit cost three tuples and a
  bisect.)
- Hits carry the caller's ids, and the same starts whether or not Hyperscan tracks them:
  an expression compiled with HS_FLAG_SOM_LEFTMOST whose matches all have one width (a
  literal, or a pattern whose `hs_expression_info` gives min_width == max_width) is
  compiled without it, and its hits start at end - width. Tracking the start of match
  costs Hyperscan's automata at every byte: on the shape triggers, 12 % of the scan of a
  dense 2 KB order. (The database is compiled with each expression's index as its id;
  the hit's id is read back from `ids`.)
- Compile errors raise ValueError with Hyperscan's message (it names the expression's
  index, never the scanned data); a failed scan raises RuntimeError.

Invariants. A scan of less than `_LARGE` bytes keeps the GIL: it takes tens of
microseconds, and holding the GIL makes the database's one scratch space safe to share
between threads. A larger scan (a long document's text) releases the GIL and uses its
own clone of the scratch space, so other threads run meanwhile. The callback never
touches Python objects (it may run without the GIL).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <hs.h>

#include "_triggers.h"

/* Above this size a scan releases the GIL (about 0.1-1 ms of scanning). */
#define LARGE_SCAN 65536

typedef struct {
    unsigned int id;
    unsigned long long start;
    unsigned long long end;
} Hit;

typedef struct {
    Hit *hits;
    size_t count;
    size_t capacity;
    int out_of_memory;
    const unsigned int *ids; /* by expression index: the caller's id */
    const int *widths;       /* by expression index: its fixed width, or -1 (start as reported) */
} HitBuffer;

#define HIT_BUFFER(database) {NULL, 0, 0, 0, (database)->ids, (database)->widths}

/* Appends a hit; 0, or -1 when out of memory (flagged in the buffer). */
static int push_hit(HitBuffer *buffer, unsigned int id, unsigned long long start,
                    unsigned long long end)
{
    if (buffer->count == buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity * 2 : 64;
        Hit *grown = realloc(buffer->hits, capacity * sizeof(Hit));
        if (grown == NULL) {
            buffer->out_of_memory = 1;
            return -1;
        }
        buffer->hits = grown;
        buffer->capacity = capacity;
    }
    buffer->hits[buffer->count++] = (Hit){id, start, end};
    return 0;
}

static int record_hit(unsigned int index, unsigned long long from, unsigned long long to,
                      unsigned int flags, void *context)
{
    (void)flags;
    HitBuffer *buffer = context;
    int width = buffer->widths[index];
    if (width >= 0) {
        from = to - (unsigned long long)width;
    }
    return push_hit(buffer, buffer->ids[index], from, to) < 0; /* 1 halts the scan */
}

/* find_triggers' sink (see _triggers.h). */
static int record_trigger_hit(void *context, unsigned int id, size_t start, size_t end)
{
    return push_hit(context, id, start, end);
}

typedef struct {
    PyObject_HEAD
    hs_database_t *database;
    hs_scratch_t *scratch;
    unsigned int *ids; /* see HitBuffer */
    int *widths;
    int compiled;
    int has_triggers;
    int trigger_ids[TRIGGER_KINDS]; /* the id of each kind _triggers.h finds, or -1 */
} Database;

static void Database_dealloc(Database *self)
{
    PyMem_Free(self->ids);
    PyMem_Free(self->widths);
    if (self->scratch != NULL) {
        hs_free_scratch(self->scratch);
    }
    if (self->database != NULL) {
        hs_free_database(self->database);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Each expression's fixed width where the caller asked for its start (SOM_LEFTMOST) and
   all its matches have one width, its SOM flag then dropped; else -1. 0, or -1 with a
   ValueError (Hyperscan's message) for an expression Hyperscan cannot read. */
static int fixed_widths(const char **texts, const size_t *lengths, unsigned int *flag_values,
                        Py_ssize_t count, int literal, int *widths)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        widths[i] = -1;
        if (!(flag_values[i] & HS_FLAG_SOM_LEFTMOST)) {
            continue;
        }
        unsigned int flags = flag_values[i] & ~(unsigned int)HS_FLAG_SOM_LEFTMOST;
        if (literal) {
            if (lengths[i] <= (size_t)INT_MAX) {
                widths[i] = (int)lengths[i];
                flag_values[i] = flags;
            }
            continue;
        }
        hs_expr_info_t *info = NULL;
        hs_compile_error_t *error = NULL;
        if (hs_expression_info(texts[i], flags, &info, &error) != HS_SUCCESS) {
            PyErr_Format(PyExc_ValueError, "expression %zd: %s", i,
                         error != NULL ? error->message : "not readable");
            if (error != NULL) {
                hs_free_compile_error(error);
            }
            return -1;
        }
        if (info->min_width == info->max_width && info->max_width <= (unsigned int)INT_MAX) {
            widths[i] = (int)info->max_width;
            flag_values[i] = flags;
        }
        free(info); /* allocated by Hyperscan's default (malloc) allocator */
    }
    return 0;
}

/* The expressions as C strings (borrowed from the bytes objects) and their lengths. */
static int expression_arrays(PyObject *expressions, Py_ssize_t count, const char **texts,
                             size_t *lengths)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(expressions, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "expressions must be bytes");
            return -1;
        }
        texts[i] = PyBytes_AS_STRING(item);
        lengths[i] = (size_t)PyBytes_GET_SIZE(item);
    }
    return 0;
}

/* The kinds `triggers` (a list of (shape name, id)) asks find_triggers for. */
static int read_triggers(Database *self, PyObject *triggers)
{
    for (int kind = 0; kind < TRIGGER_KINDS; kind++) {
        self->trigger_ids[kind] = -1;
    }
    self->has_triggers = 0; /* a second __init__ after a failed one starts afresh */
    if (triggers == NULL) {
        return 0;
    }
    if (!PyList_Check(triggers)) {
        PyErr_SetString(PyExc_TypeError, "triggers must be a list of (name, id)");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(triggers); i++) {
        const char *name;
        int id;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(triggers, i), "si", &name, &id)) {
            return -1;
        }
        int kind = trigger_kind(name);
        if (kind < 0 || id < 0) {
            PyErr_SetString(PyExc_ValueError, "a trigger names no built-in kind, or its id is < 0");
            return -1;
        }
        self->trigger_ids[kind] = id;
        self->has_triggers = 1;
    }
    return 0;
}

static int Database_init(Database *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"expressions", "ids", "flags", "literal", "triggers", NULL};
    PyObject *expressions, *ids, *flags, *triggers = NULL;
    int literal = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O|p$O", keywords, &PyList_Type,
                                     &expressions, &PyList_Type, &ids, &flags, &literal,
                                     &triggers)) {
        return -1;
    }
    if (self->compiled) {
        PyErr_SetString(PyExc_RuntimeError, "Database is already compiled");
        return -1;
    }
    if (read_triggers(self, triggers) < 0) {
        return -1;
    }
    Py_ssize_t count = PyList_GET_SIZE(expressions);
    if ((count == 0 && !self->has_triggers) || PyList_GET_SIZE(ids) != count
        || (!literal && (!PyList_Check(flags) || PyList_GET_SIZE(flags) != count))
        || (literal && self->has_triggers)) {
        PyErr_SetString(PyExc_ValueError,
                        "expressions, ids and flags must be of one length, non-empty "
                        "unless triggers are given (never with literals)");
        return -1;
    }
    if (count == 0) { /* the built-in triggers alone */
        self->compiled = 1;
        return 0;
    }
    const char **texts = PyMem_Calloc((size_t)count, sizeof(char *));
    size_t *lengths = PyMem_Calloc((size_t)count, sizeof(size_t));
    unsigned int *indexes = PyMem_Calloc((size_t)count, sizeof(unsigned int));
    unsigned int *flag_values = PyMem_Calloc((size_t)count, sizeof(unsigned int));
    self->ids = PyMem_Calloc((size_t)count, sizeof(unsigned int));
    self->widths = PyMem_Calloc((size_t)count, sizeof(int));
    int status = -1;
    if (texts == NULL || lengths == NULL || indexes == NULL || flag_values == NULL
        || self->ids == NULL || self->widths == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (expression_arrays(expressions, count, texts, lengths) < 0) {
        goto done;
    }
    unsigned long common_flags = 0;
    if (literal) {
        common_flags = PyLong_AsUnsignedLong(flags);
        if (PyErr_Occurred()) {
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        indexes[i] = (unsigned int)i;
        self->ids[i] = (unsigned int)PyLong_AsUnsignedLong(PyList_GET_ITEM(ids, i));
        flag_values[i] = literal ? (unsigned int)common_flags
                                 : (unsigned int)PyLong_AsUnsignedLong(PyList_GET_ITEM(flags, i));
        if (PyErr_Occurred()) {
            goto done;
        }
    }
    if (fixed_widths(texts, lengths, flag_values, count, literal, self->widths) < 0) {
        goto done;
    }

    hs_compile_error_t *error = NULL;
    hs_error_t result;
    Py_BEGIN_ALLOW_THREADS
    if (literal) {
        result = hs_compile_lit_multi(texts, flag_values, indexes, lengths,
                                      (unsigned int)count, HS_MODE_BLOCK, NULL,
                                      &self->database, &error);
    } else {
        /* hs_compile_multi reads NUL-terminated expressions: bytes objects are. */
        result = hs_compile_multi(texts, flag_values, indexes, (unsigned int)count,
                                  HS_MODE_BLOCK, NULL, &self->database, &error);
    }
    Py_END_ALLOW_THREADS
    if (result != HS_SUCCESS) {
        if (error != NULL) {
            PyErr_Format(PyExc_ValueError, "expression %d: %s", error->expression,
                         error->message);
            hs_free_compile_error(error);
        } else {
            PyErr_Format(PyExc_ValueError, "Hyperscan compile error %d", (int)result);
        }
        self->database = NULL;
        goto done;
    }
    if (hs_alloc_scratch(self->database, &self->scratch) != HS_SUCCESS) {
        PyErr_SetString(PyExc_MemoryError, "Hyperscan scratch space");
        goto done;
    }
    status = 0;
    self->compiled = 1;
done:
    if (status < 0) {
        PyMem_Free(self->ids);
        PyMem_Free(self->widths);
        self->ids = NULL;
        self->widths = NULL;
    }
    PyMem_Free(texts);
    PyMem_Free(lengths);
    PyMem_Free(indexes);
    PyMem_Free(flag_values);
    return status;
}

/* A new (id, start, end) tuple, or NULL with an exception set. Built directly:
   Py_BuildValue parses its format string for every hit. */
static PyObject *hit_tuple(unsigned int id, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *item = PyTuple_New(3);
    if (item == NULL) {
        return NULL;
    }
    PyObject *values[3] = {PyLong_FromUnsignedLong(id), PyLong_FromSsize_t(start),
                           PyLong_FromSsize_t(end)};
    for (int i = 0; i < 3; i++) {
        if (values[i] == NULL) {
            for (int j = 0; j < 3; j++) {
                Py_XDECREF(values[j]);
            }
            Py_DECREF(item);
            return NULL;
        }
    }
    for (int i = 0; i < 3; i++) {
        PyTuple_SET_ITEM(item, i, values[i]);
    }
    return item;
}

static PyObject *hits_as_list(const HitBuffer *buffer)
{
    PyObject *list = PyList_New((Py_ssize_t)buffer->count);
    if (list == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < buffer->count; i++) {
        const Hit *hit = &buffer->hits[i];
        PyObject *item = hit_tuple(hit->id, (Py_ssize_t)hit->start, (Py_ssize_t)hit->end);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

/* Hits sort by id, then start, then end. */
static int hit_before(const Hit *a, const Hit *b)
{
    if (a->id != b->id) {
        return a->id < b->id;
    }
    if (a->start != b->start) {
        return a->start < b->start;
    }
    return a->end < b->end;
}

static int compare_hits(const void *left, const void *right)
{
    return hit_before(left, right) ? -1 : hit_before(right, left);
}

/* A scan with at most SMALL_SCAN_HITS hits, all with ids below SMALL_SCAN_IDS (a 2 KB
   lab order: ~30 hits, 17 shapes), is sorted by counting its ids, then by insertion
   within each id (reported by end, its hits are nearly sorted by start already): ~1.6k
   instructions per dense order, where qsort (glibc's merge sort, a comparator call per
   step) took ~8k, more than the grouping saved Python. Anything larger takes qsort:
   insertion is quadratic. */
#define SMALL_SCAN_HITS 64
#define SMALL_SCAN_IDS 32

static void sort_hits(Hit *hits, size_t count)
{
    int small = count <= SMALL_SCAN_HITS;
    for (size_t i = 0; small && i < count; i++) {
        small = hits[i].id < SMALL_SCAN_IDS;
    }
    if (!small) {
        qsort(hits, count, sizeof(Hit), compare_hits);
        return;
    }
    size_t first[SMALL_SCAN_IDS + 1] = {0}; /* where each id's hits go */
    for (size_t i = 0; i < count; i++) {
        first[hits[i].id + 1]++;
    }
    for (size_t id = 1; id <= SMALL_SCAN_IDS; id++) {
        first[id] += first[id - 1];
    }
    Hit by_id[SMALL_SCAN_HITS];
    for (size_t i = 0; i < count; i++) {
        by_id[first[hits[i].id]++] = hits[i];
    }
    /* Insertion by (id, start, end): only hits of one id are ever out of order now. */
    for (size_t i = 0; i < count; i++) {
        Hit hit = by_id[i];
        size_t j = i;
        for (; j > 0 && hit_before(&hit, &hits[j - 1]); j--) {
            hits[j] = hits[j - 1];
        }
        hits[j] = hit;
    }
}

static int same_span(const Hit *a, const Hit *b)
{
    return a->start == b->start && a->end == b->end;
}

/* Sorts the buffer's hits by id, start and end, and keeps each distinct hit once (a
   span Hyperscan reports twice for one id). Both grouped forms read it so. */
static void sort_distinct_hits(HitBuffer *buffer)
{
    Hit *hits = buffer->hits;
    sort_hits(hits, buffer->count);
    size_t distinct = 0;
    for (size_t i = 0; i < buffer->count; i++) {
        /* hits[i - 1] still holds its own hit: writes only reach index distinct - 1 < i. */
        if (i > 0 && hits[i].id == hits[i - 1].id && same_span(&hits[i], &hits[i - 1])) {
            continue;
        }
        hits[distinct++] = hits[i];
    }
    buffer->count = distinct;
}

/* The hits as (id, [start, end, ...]) per id: see the contract. Sorts the buffer. */
static PyObject *hits_grouped(HitBuffer *buffer)
{
    sort_distinct_hits(buffer);
    Hit *hits = buffer->hits;
    size_t count = buffer->count;
    PyObject *groups = PyList_New(0);
    if (groups == NULL) {
        return NULL;
    }
    size_t first = 0;
    while (first < count) {
        unsigned int id = hits[first].id;
        size_t last = first + 1;
        while (last < count && hits[last].id == id) {
            last++;
        }
        PyObject *spans = PyList_New((Py_ssize_t)(2 * (last - first)));
        PyObject *key = PyLong_FromUnsignedLong(id);
        PyObject *group = (spans != NULL && key != NULL) ? PyTuple_Pack(2, key, spans) : NULL;
        Py_XDECREF(key);
        if (group == NULL || PyList_Append(groups, group) < 0) {
            Py_XDECREF(spans);
            Py_XDECREF(group);
            Py_DECREF(groups);
            return NULL;
        }
        Py_DECREF(group);
        Py_ssize_t slot = 0;
        for (size_t i = first; i < last; i++) {
            PyObject *start = PyLong_FromUnsignedLongLong(hits[i].start);
            if (start == NULL) {
                Py_DECREF(spans);
                Py_DECREF(groups);
                return NULL;
            }
            PyList_SET_ITEM(spans, slot++, start);
            PyObject *end = PyLong_FromUnsignedLongLong(hits[i].end);
            if (end == NULL) {
                Py_DECREF(spans);
                Py_DECREF(groups);
                return NULL;
            }
            PyList_SET_ITEM(spans, slot++, end);
        }
        Py_DECREF(spans);
        first = last;
    }
    return groups;
}

/* Hyperscan's hits, then the built-in triggers' (which never touch Python objects), into
   `buffer`; a failed allocation is flagged there. */
static hs_error_t scan_into(const Database *self, const Py_buffer *view, hs_scratch_t *scratch,
                            HitBuffer *buffer)
{
    hs_error_t result = HS_SUCCESS;
    if (self->database != NULL) {
        result = hs_scan(self->database, view->buf, (unsigned int)view->len, 0, scratch,
                         record_hit, buffer);
    }
    if (result == HS_SUCCESS && self->has_triggers && !buffer->out_of_memory) {
        find_triggers(self->trigger_ids, view->buf, (size_t)view->len, record_trigger_hit,
                      buffer);
    }
    return result;
}

/* Scans `data` into `buffer` (which the caller frees); -1 with an exception set on error. */
static int scan_hits(Database *self, PyObject *data, HitBuffer *buffer)
{
    if (!self->compiled) {
        PyErr_SetString(PyExc_RuntimeError, "Database is not compiled");
        return -1;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if ((unsigned long long)view.len > 0xFFFFFFFFULL) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "Hyperscan scans less than 4 GiB at once");
        return -1;
    }
    hs_error_t result = HS_SUCCESS;
    if (view.len < LARGE_SCAN) {
        result = scan_into(self, &view, self->scratch, buffer);
    } else {
        hs_scratch_t *scratch = NULL;
        if (self->scratch != NULL) {
            result = hs_clone_scratch(self->scratch, &scratch);
        }
        if (result == HS_SUCCESS) {
            Py_BEGIN_ALLOW_THREADS
            result = scan_into(self, &view, scratch, buffer);
            Py_END_ALLOW_THREADS
            if (scratch != NULL) {
                hs_free_scratch(scratch);
            }
        }
    }
    PyBuffer_Release(&view);
    if (buffer->out_of_memory) {
        PyErr_NoMemory();
        return -1;
    }
    if (result != HS_SUCCESS) {
        PyErr_Format(PyExc_RuntimeError, "Hyperscan scan error %d", (int)result);
        return -1;
    }
    return 0;
}

static PyObject *Database_scan(Database *self, PyObject *data)
{
    HitBuffer buffer = HIT_BUFFER(self);
    PyObject *list = scan_hits(self, data, &buffer) < 0 ? NULL : hits_as_list(&buffer);
    free(buffer.hits);
    return list;
}

/* The sorted, distinct hits packed: see the contract. Sorts the buffer. */
static PyObject *hits_packed(HitBuffer *buffer)
{
    sort_distinct_hits(buffer);
    size_t distinct = buffer->count;
    Py_ssize_t size = (Py_ssize_t)(distinct * 3 * sizeof(long long));
    PyObject *packed = PyBytes_FromStringAndSize(NULL, size);
    if (packed == NULL) {
        return NULL;
    }
    long long *values = (long long *)PyBytes_AS_STRING(packed);
    for (size_t i = 0; i < distinct; i++) {
        values[3 * i] = (long long)buffer->hits[i].id;
        values[3 * i + 1] = (long long)buffer->hits[i].start;
        values[3 * i + 2] = (long long)buffer->hits[i].end;
    }
    return packed;
}

static PyObject *Database_scan_grouped_packed(Database *self, PyObject *data)
{
    HitBuffer buffer = HIT_BUFFER(self);
    PyObject *packed = scan_hits(self, data, &buffer) < 0 ? NULL : hits_packed(&buffer);
    free(buffer.hits);
    return packed;
}

static PyObject *Database_scan_grouped(Database *self, PyObject *data)
{
    HitBuffer buffer = HIT_BUFFER(self);
    PyObject *groups = scan_hits(self, data, &buffer) < 0 ? NULL : hits_grouped(&buffer);
    free(buffer.hits);
    return groups;
}

/* The first `count` items of `list` as Py_ssize_t, each >= 0; -1 with an exception set. */
static int read_sizes(PyObject *list, Py_ssize_t count, Py_ssize_t *values)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        values[i] = PyLong_AsSsize_t(PyList_GET_ITEM(list, i));
        if (values[i] < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "field starts and lengths must be >= 0");
            }
            return -1;
        }
    }
    return 0;
}

/* The hits as a list of lists, one per field: see the contract. */
static PyObject *hits_by_field(const HitBuffer *buffer, const Py_ssize_t *starts,
                               const Py_ssize_t *lengths, Py_ssize_t fields, Py_ssize_t trim)
{
    PyObject *lists = PyList_New(fields);
    if (lists == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < fields; i++) {
        PyObject *list = PyList_New(0);
        if (list == NULL) {
            Py_DECREF(lists);
            return NULL;
        }
        PyList_SET_ITEM(lists, i, list);
    }
    for (size_t i = 0; i < buffer->count; i++) {
        const Hit *hit = &buffer->hits[i];
        Py_ssize_t start = (Py_ssize_t)hit->start, end = (Py_ssize_t)hit->end - trim;
        if (end < start || start < starts[0]) {
            continue;
        }
        /* The last field starting at or before the hit (hits come by end, not start). */
        Py_ssize_t low = 0, high = fields;
        while (high - low > 1) {
            Py_ssize_t middle = low + (high - low) / 2;
            if (starts[middle] <= start) {
                low = middle;
            } else {
                high = middle;
            }
        }
        Py_ssize_t base = starts[low];
        if (end > base + lengths[low]) {
            continue;
        }
        PyObject *item = hit_tuple(hit->id, start - base, end - base);
        int failed = item == NULL || PyList_Append(PyList_GET_ITEM(lists, low), item) < 0;
        Py_XDECREF(item);
        if (failed) {
            Py_DECREF(lists);
            return NULL;
        }
    }
    return lists;
}

static PyObject *Database_scan_by_field(Database *self, PyObject *args)
{
    PyObject *data, *starts, *lengths;
    Py_ssize_t trim;
    if (!PyArg_ParseTuple(args, "OO!O!n:scan_by_field", &data, &PyList_Type, &starts,
                          &PyList_Type, &lengths, &trim)) {
        return NULL;
    }
    Py_ssize_t fields = PyList_GET_SIZE(starts);
    if (fields == 0 || PyList_GET_SIZE(lengths) != fields || trim < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "starts and lengths must be non-empty and of one length, trim >= 0");
        return NULL;
    }
    Py_ssize_t *values = PyMem_New(Py_ssize_t, 2 * (size_t)fields);
    if (values == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    HitBuffer buffer = HIT_BUFFER(self);
    if (read_sizes(starts, fields, values) < 0
        || read_sizes(lengths, fields, values + fields) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 1; i < fields; i++) {
        if (values[i] < values[i - 1]) {
            PyErr_SetString(PyExc_ValueError, "field starts must be ascending");
            goto done;
        }
    }
    if (scan_hits(self, data, &buffer) == 0) {
        result = hits_by_field(&buffer, values, values + fields, fields, trim);
    }
done:
    free(buffer.hits);
    PyMem_Free(values);
    return result;
}

static PyMethodDef Database_methods[] = {
    {"scan", (PyCFunction)Database_scan, METH_O,
     "scan(data) -> list of (id, start, end), in Hyperscan's report order"},
    {"scan_grouped", (PyCFunction)Database_scan_grouped, METH_O,
     "scan_grouped(data) -> list of (id, [start, end, ...]): distinct spans, sorted"},
    {"scan_grouped_packed", (PyCFunction)Database_scan_grouped_packed, METH_O,
     "scan_grouped_packed(data) -> bytes: scan_grouped's hits as native long long triples"},
    {"scan_by_field", (PyCFunction)Database_scan_by_field, METH_VARARGS,
     "scan_by_field(data, starts, lengths, trim) -> per field, list of (id, start, end)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DatabaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.scan._hyperscan.Database",
    .tp_doc = "A compiled block-mode Hyperscan database and its scratch space.",
    .tp_basicsize = sizeof(Database),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Database_init,
    .tp_dealloc = (destructor)Database_dealloc,
    .tp_methods = Database_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.scan._hyperscan",
    .m_doc = "Hyperscan block-mode scanning that returns the hits as a list.",
    .m_size = -1,
};

/* TRIGGERS: the shape names find_triggers knows, as a tuple. */
static int add_trigger_names(PyObject *module)
{
    PyObject *names = PyTuple_New(TRIGGER_KINDS);
    if (names == NULL) {
        return -1;
    }
    for (int kind = 0; kind < TRIGGER_KINDS; kind++) {
        PyObject *name = PyUnicode_FromString(trigger_names[kind]);
        if (name == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, kind, name);
    }
    int result = PyModule_AddObjectRef(module, "TRIGGERS", names);
    Py_DECREF(names);
    return result;
}

PyMODINIT_FUNC PyInit__hyperscan(void)
{
    if (hs_valid_platform() != HS_SUCCESS) { /* Hyperscan needs SSSE3 */
        PyErr_SetString(PyExc_ImportError, "Hyperscan does not support this CPU");
        return NULL;
    }
    triggers_init();
    if (PyType_Ready(&DatabaseType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Database", (PyObject *)&DatabaseType) < 0
        || PyModule_AddIntConstant(m, "HS_FLAG_CASELESS", HS_FLAG_CASELESS) < 0
        || PyModule_AddIntConstant(m, "HS_FLAG_SOM_LEFTMOST", HS_FLAG_SOM_LEFTMOST) < 0
        || PyModule_AddStringConstant(m, "HS_VERSION", hs_version()) < 0
        || add_trigger_names(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
