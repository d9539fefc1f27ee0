/* gateway.scan._native_text: the scan core's text folding and word view, in one C pass,
and a search of the word view for several words.

Purpose. The scan core folds every field of every message to ASCII (gateway/scan/_fold.py:
accents stripped, case kept, one character per character) and reads the folded text's
word view (gateway/scan/matchers.py: letters and digits lower-cased, every other byte a
space). In Python each is a str.encode and a bytes.translate (about 15 instructions a
character for the translate of compiled code) and a copy or two more: some 50,000
instructions of a dense 2 KB order, a sixteenth of the scan. Here each is one loop over
the str's or the bytes' own storage that writes the result object directly: 35,000
instructions fewer per dense order (load-tests/callgrind_scan.py, 788.0k to 752.8k).

Contract (gateway/scan/_fold.py and matchers.py rely on it; tests/scan/test_native_text.py
checks it against their Python code for every code point and for arbitrary text):
- `fold(text, table, extras)` returns the str of len(text) whose character i is, for the
  code point c of text[i]: `table[c]` below U+0100 (`table`: bytes of length 256); from
  U+0100, the replacement of c in `extras` (a str of pairs: code point, replacement), or
  "?" when c has none. Lone surrogates are code points like any other ("?").
- `fold_keep(text, table, extras, keep)` folds text alike, then maps each folded character
  f to `keep[f]` (`keep`: bytes of length 128) and drops it when that is 0: the str of the
  characters kept.
- `word_view(data, table)` returns b" " + data.translate(table) + b" " (`table`: bytes of
  length 256).
- `find_all(data, needles)` returns, for each needle of the list `needles` (non-empty
  bytes) in turn, every start at which it occurs in the bytes `data`, ascending, overlaps
  included: the `(needle index, start)` pairs of `data.find(needle, at + 1)` repeated from
  `data.find(needle)` (glibc's memmem: 1.7 us for three first names over a dense order's
  2 KB word view, against 4.3 us for `bytes.find`, slowed by the view's many spaces).
- The tables and extras are the callers' (one definition of the mapping, in Python). A
  wrong argument type or count, or a table of the wrong length, raises TypeError or
  ValueError; so does a table or extras that would fold a character outside ASCII (the
  result of `fold` and `fold_keep` is an ASCII str). Any str folds: nothing else raises,
  but MemoryError. No message names a value: the texts are patient data.

Invariants. Holds the GIL (the texts are kilobytes: microseconds), keeps no state, and
makes no Python object but its result, so every thread may call it. The tables and the
extras' replacements are checked ASCII on every call (a few instructions), before any
work: the loops then write ASCII only, into a result made by PyUnicode_New(length, 127)
(or PyBytes), filled once in place.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define TABLE_BYTES 256 /* a table for each byte or each code point below U+0100 */
#define KEEP_BYTES 128  /* fold_keep's table, for each folded (ASCII) character */

/* The folding of a call's arguments: the table and the extras' storage. */
typedef struct {
    const unsigned char *table;
    int extras_kind;
    const void *extras;
    Py_ssize_t extras_length; /* in characters, even */
} Folding;

/* The folded code point of `c`, which is past U+00FF: its pair's replacement in the
   extras, else '?'. (A handful of pairs, and few such characters in a text.) */
static Py_UCS4 fold_wide(const Folding *folding, Py_UCS4 c)
{
    for (Py_ssize_t i = 0; i < folding->extras_length; i += 2) {
        if (PyUnicode_READ(folding->extras_kind, folding->extras, i) == c) {
            return PyUnicode_READ(folding->extras_kind, folding->extras, i + 1);
        }
    }
    return '?';
}

/* 1 when `table` is bytes of `length` ASCII bytes, else 0 with TypeError or ValueError.
   (A few vector instructions: checked on every call, the loops then write ASCII.) */
static int is_ascii_table(PyObject *table, Py_ssize_t length, const char *message)
{
    if (!PyBytes_Check(table)) {
        PyErr_SetString(PyExc_TypeError, message);
        return 0;
    }
    const unsigned char *bytes = (const unsigned char *)PyBytes_AS_STRING(table);
    unsigned char any = 0;
    for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(table); i++) {
        any |= bytes[i];
    }
    if (PyBytes_GET_SIZE(table) != length || any > 127) {
        PyErr_SetString(PyExc_ValueError, message);
        return 0;
    }
    return 1;
}

/* Checks the (text, table, extras, ...) arguments of `function` and fills `folding`:
   1, else 0 with an exception set. */
static int parse_folding(const char *function, PyObject *const *args, Py_ssize_t nargs,
                         Py_ssize_t expected, Folding *folding)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments, %zd given", function,
                     expected, nargs);
        return 0;
    }
    if (!PyUnicode_Check(args[0]) || !PyUnicode_Check(args[2])) {
        PyErr_Format(PyExc_TypeError, "%s(): text and extras must be str", function);
        return 0;
    }
    if (!is_ascii_table(args[1], TABLE_BYTES, "table must be bytes of 256 ASCII bytes")) {
        return 0;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(args[0]) < 0 || PyUnicode_READY(args[2]) < 0) {
        return 0;
    }
#endif
    folding->table = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    folding->extras_kind = PyUnicode_KIND(args[2]);
    folding->extras = PyUnicode_DATA(args[2]);
    folding->extras_length = PyUnicode_GET_LENGTH(args[2]);
    int ascii = 1;
    for (Py_ssize_t i = 1; i < folding->extras_length; i += 2) {
        ascii &= PyUnicode_READ(folding->extras_kind, folding->extras, i) < 128;
    }
    if (folding->extras_length % 2 || !ascii) {
        PyErr_Format(PyExc_ValueError,
                     "%s(): extras must be pairs of characters, each folded to ASCII",
                     function);
        return 0;
    }
    return 1;
}

static PyObject *fold(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Folding folding;
    if (!parse_folding("fold", args, nargs, 3, &folding)) {
        return NULL;
    }
    PyObject *text = args[0];
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *result = PyUnicode_New(length, 127);
    if (result == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(result);
    const unsigned char *table = folding.table;
    if (kind == PyUnicode_1BYTE_KIND) { /* every code point below U+0100 */
        const Py_UCS1 *in = data;
#pragma GCC unroll 8
        for (Py_ssize_t i = 0; i < length; i++) {
            out[i] = table[in[i]];
        }
    } else if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *in = data;
        for (Py_ssize_t i = 0; i < length; i++) {
            Py_UCS4 c = in[i];
            out[i] = (Py_UCS1)(c < TABLE_BYTES ? table[c] : fold_wide(&folding, c));
        }
    } else {
        const Py_UCS4 *in = data;
        for (Py_ssize_t i = 0; i < length; i++) {
            Py_UCS4 c = in[i];
            out[i] = (Py_UCS1)(c < TABLE_BYTES ? table[c] : fold_wide(&folding, c));
        }
    }
    return result;
}

static PyObject *fold_keep(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Folding folding;
    if (!parse_folding("fold_keep", args, nargs, 4, &folding)
        || !is_ascii_table(args[3], KEEP_BYTES, "keep must be bytes of 128 ASCII bytes")) {
        return NULL;
    }
    PyObject *text = args[0];
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const unsigned char *keep = (const unsigned char *)PyBytes_AS_STRING(args[3]);
    PyObject *result = PyUnicode_New(length, 127); /* at most every character kept */
    if (result == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(result);
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        Py_UCS4 folded = c < TABLE_BYTES ? folding.table[c] : fold_wide(&folding, c);
        if (keep[folded] != 0) { /* folded is ASCII: the tables were checked */
            out[kept++] = keep[folded];
        }
    }
    if (kept < length && PyUnicode_Resize(&result, kept) < 0) {
        return NULL; /* PyUnicode_Resize has dropped `result` */
    }
    return result;
}

static PyObject *word_view(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "word_view() takes 2 arguments, %zd given", nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "word_view(): data must be bytes");
        return NULL;
    }
    if (!PyBytes_Check(args[1]) || PyBytes_GET_SIZE(args[1]) != TABLE_BYTES) {
        PyErr_SetString(PyExc_TypeError, "word_view(): table must be bytes of length 256");
        return NULL;
    }
    const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const unsigned char *table = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t length = PyBytes_GET_SIZE(args[0]);
    if (length > PY_SSIZE_T_MAX - 2) {
        return PyErr_NoMemory();
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, length + 2);
    if (result == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    out[0] = ' ';
#pragma GCC unroll 8
    for (Py_ssize_t i = 0; i < length; i++) {
        out[i + 1] = table[in[i]];
    }
    out[length + 1] = ' ';
    return result;
}

/* find_all(data, needles): see the header. */
static PyObject *find_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "find_all() takes 2 arguments, %zd given", nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "find_all(): data must be bytes, needles a list");
        return NULL;
    }
    const char *data = PyBytes_AS_STRING(args[0]);
    Py_ssize_t length = PyBytes_GET_SIZE(args[0]);
    PyObject *needles = args[1];
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(needles); n++) {
        PyObject *needle = PyList_GET_ITEM(needles, n);
        if (!PyBytes_Check(needle) || PyBytes_GET_SIZE(needle) == 0) {
            PyErr_SetString(PyExc_ValueError, "find_all(): each needle must be non-empty bytes");
            return NULL;
        }
    }
    PyObject *found = PyList_New(0);
    if (found == NULL) {
        return NULL;
    }
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(needles); n++) {
        PyObject *needle = PyList_GET_ITEM(needles, n);
        const char *text = PyBytes_AS_STRING(needle);
        size_t width = (size_t)PyBytes_GET_SIZE(needle);
        const char *at = data;
        const char *end = data + length;
        while ((size_t)(end - at) >= width) {
            const char *hit = memmem(at, (size_t)(end - at), text, width);
            if (hit == NULL) {
                break;
            }
            PyObject *item = Py_BuildValue("(nn)", n, (Py_ssize_t)(hit - data));
            int failed = item == NULL || PyList_Append(found, item) < 0;
            Py_XDECREF(item);
            if (failed) {
                Py_DECREF(found);
                return NULL;
            }
            at = hit + 1;
        }
    }
    return found;
}

static PyMethodDef methods[] = {
    {"fold", (PyCFunction)(void (*)(void))fold, METH_FASTCALL,
     "fold(text, table, extras) -> text folded one ASCII character per character"},
    {"fold_keep", (PyCFunction)(void (*)(void))fold_keep, METH_FASTCALL,
     "fold_keep(text, table, extras, keep) -> text folded, mapped by keep, its 0s dropped"},
    {"word_view", (PyCFunction)(void (*)(void))word_view, METH_FASTCALL,
     "word_view(data, table) -> b' ' + data.translate(table) + b' '"},
    {"find_all", (PyCFunction)(void (*)(void))find_all, METH_FASTCALL,
     "find_all(data, needles) -> [(needle index, start)]: every occurrence, by needle"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.scan._native_text",
    .m_doc = "The scan core's text folding and word view, in one C pass.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__native_text(void)
{
    return PyModule_Create(&module);
}
