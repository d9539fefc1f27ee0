/* gateway.scan._first_names: the roster-name stage's first-name and civility reads, and the
   context names' value and roster look-up, in C.

Purpose. Every roster literal hit of a field (a rostered surname, a whole word) is read
by gateway/scan/engine.py for a first name of the same patient just before it
(Engine._first_name_before_py) or after it (_first_name_after_py), and a surname left
alone for a civility before it (_after_civility_py). In compiled Python each read walks
the text one boxed character at a time, slices and lower-cases the neighbouring word and
looks it up in a frozenset, and, where it is a first name's end or start, lower-cases the
whole field and runs a regex: ~13k instructions on a dense 2 KB order with a 10,000-
patient roster, growing with the roster. Here the neighbours are read in place in the
folded text's own bytes; the neighbouring word is first looked up, lower-cased on the
fly, in a filter of the (surname, word) pairs of the surnames' first names (built once),
and a Python str is made only where the filter passes it, for the look-ups the Python
makes. A dense order costs 6.8k instructions fewer with a 10,000-patient roster
(load-tests/callgrind_scan.py, 542.5k to 535.7k; 536.7k without the word tables). The
words of a field are walked in one call (`full_names`): called per word and side from
compiled Python, the calls cost about as much as the reads.

The context names (Engine._context_name_py: each UPPER_FIRST, FIRST_UPPER, CIVILITY_NAME
and INTRO_NAME name and each display name, ~4 a dense order) are lower-cased, split and
looked up in the roster (Engine._patient_for_name_words_py: the first word a name head,
then each cut of the words into two parts, both orders, a fresh str, tuple and hash for
each, and min() of the keys found): ~15k instructions a dense order, ~6k of them the
look-up. Here, where the name's words are letters and digits one space apart (most
names; others are normalised by the Python first, then looked up here), the value is
lower-cased in one pass, the first word of each part is looked up in place in a table
of the roster's name heads, and a cut whose two parts' first words both are is looked
up in a table of full_names' pairs as bytes, each with min() of its patient keys (both
built once): no Python object is made but the value. A dense order costs 6.7k
instructions fewer (load-tests/callgrind_scan.py, 522.0k to 515.3k; 521.9k where the
pairs were still made as str and tuples and looked up in full_names: real names'
words are mostly name heads, so the head filter alone spares little).

Contract (gateway/scan/engine.py dispatches to it and keeps its Python as the fallback;
tests/scan/test_first_names_native.py compares both at every roster hit and every
context name of the corpus and the dense benchmark orders, on arbitrary text at every
offset and on word lists):
- `FirstNames(full_names, first_heads, first_tails, name_heads, window)`: the engine's
  roster tables, referenced as they are: `full_names` a dict keyed by (surname, first
  name) tuples, its values lists of patient keys (str), `first_heads` and `first_tails`
  dicts from a surname to an iterable container (frozenset) of str, the first and the
  last words of its patients' first names, `name_heads` (Engine._name_heads, a frozenset
  or set) the first word (`part.split(" ", 1)[0]`) of each part of every key of
  full_names, else ValueError, and engine._FIRST_NAME_WINDOW (int >= 0). The tables
  must not change afterwards (the engine builds them once per roster): the containers'
  and name_heads' words are read once, when the object is made, to pre-filter the
  look-ups.
  - `context_name(folded, start, end)` returns (value, patient) of what
    Engine._context_name_py(folded, start, end) returns where folded[start:end] is
    words of [A-Za-z0-9] one space apart, else None (the caller then runs
    normalise_folded_name and patient_for_words); 0 <= start <= end <= len(folded).
  - `patient_for_words(words)` returns what Engine._patient_for_name_words_py(words)
    returns (`min` of the first true full_names value found, or None); `words` a list
    of ASCII str (TypeError, ValueError).
  - `after(folded, end, surname, in_file_name)` returns what
    Engine._first_name_after_py(folded, end, surname, pattern, in_file_name) returns,
    `pattern` the engine's _FIRST_AFTER_FILE if `in_file_name` else _FIRST_AFTER:
    (start, end, first name) or None; 0 <= end <= len(folded).
  - `before(folded, start, surname, in_file_name)` returns what
    Engine._first_name_before_py returns; 0 <= start <= len(folded).
  - `full_names(folded, words, in_file_name)` returns what
    Engine._full_names_walk_py returns, the walk over a field's roster words: `words` a
    list of (start, end, surname)
    tuples (TypeError), 0 <= start <= end <= len(folded) (ValueError), each read with
    before(), else after(), unless it starts before the end of the name taken last (its
    surname and first name). Returns None where no word is taken, else a list of
    (index in words, match) in word order, match what before() or after() returned, or
    None for a word inside the name taken before it. One call a field: a call per word
    and side, from compiled Python, cost about as much as the reads themselves.
- `Civilities(words, tails, window)`: engine._CIVILITY_WORDS (1-32 ASCII characters,
  the last not " " or ":"; the words _CIVILITY_BEFORE is built from, each after a word
  boundary and before 1-3 of " :"), _CIVILITY_TAILS (ASCII str: only those of two
  characters can match) and _CIVILITY_WINDOW (int >= 0), copied. `after(folded, start)`
  returns what engine._after_civility_py returns (a bool); 0 <= start <= len(folded).
- `folded` must be an ASCII str (gateway/scan/_fold.py folds to ASCII), else ValueError;
  offsets must be int (TypeError) within the ranges above (ValueError); `surname` must
  be str and `in_file_name` bool (TypeError). A wrong argument count or type raises
  TypeError. No message names a value: the texts are patient data.

Invariants. Holds the GIL (a hit reads tens of characters) and keeps no state but what
construction made: four references to the engine's tables (only looked up), the word and
pair tables and filters built from them, and the civility words and tails copied; all
read-only after, so every thread may call it. first_heads and first_tails are read into
Bloom filters of (surname, word) pairs, for every ASCII str surname and each ASCII str of
its container: a pair that is in them always passes, one that is not rarely (two bits of
one 64-bit block, about eight pairs a block). They only pre-filter, as the containers
did: a first name is taken only where (surname, first) is a key of full_names. A surname
that is not ASCII is looked up in the dict itself. With 100,000 patients a filter takes
128 KB, where a table of the pairs took 8 MB, each probe a likely cache miss. A cut of a
name's words is skipped only where its second part's first word is no name head: then
neither order is a key (checked, for every key of two ASCII str, when the object is
made); a word is a name head exactly when `in` name_heads finds it (its ASCII words as
written, and whether "" is one). Every offset is checked against the text's length before
any byte is read, and every read stays within what the Python reads: [end, len) after a
hit (the window bounds the words, not the first one's look-up), [start - window, start)
before one and for a civility, [start, end) for a context name. On folded (ASCII) text,
str.isalnum and the regexes' [a-z0-9] once lower-cased are [A-Za-z0-9]; \w adds "_".
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_wordset.h"

#define MAX_FIRST_WORDS 3  /* the regexes' word and {0,2} more */
#define MAX_CIVILITIES 64  /* civility words kept */
#define MAX_CIVILITY_LENGTH 32
#define MAX_TAILS 64

/* The keys of full_names of two ASCII str whose value is true, as their bytes (the two
   parts one after the other in one pool), each with min() of its value: open addressing
   (linear probing). */
typedef struct {
    Py_ssize_t offset;      /* in the pool */
    Py_ssize_t left_length; /* the first part's length */
    Py_ssize_t length;      /* both parts' */
    PyObject *patient;      /* NULL: an empty slot */
} PairSlot;

typedef struct {
    char *pool;
    PairSlot *slots;
    size_t mask; /* slot count - 1, a power of two at least twice the pair count */
} PairTable;

/* A Bloom filter of (surname, word) pairs: a pair sets two bits of one 64-bit block, so a
   look-up reads one word of memory. With 100,000 patients, 128 KB where the table of the
   pairs themselves took 8 MB and each probe of it a likely cache miss. */
typedef struct {
    uint64_t *blocks;
    size_t mask; /* block count - 1, a power of two */
} PairFilter;

typedef struct {
    PyObject_HEAD
    PyObject *full_names;  /* dict: (surname, first) -> patient keys */
    PyObject *first_heads; /* dict: surname -> container of first words */
    PyObject *first_tails; /* dict: surname -> container of last words */
    Py_ssize_t window;
    PyObject *name_heads; /* frozenset: the first word of each part of every key */
    WordSet heads;        /* its ASCII words (never the empty one) */
    int heads_has_empty;  /* whether "" is in name_heads */
    PairTable pairs;      /* full_names' keys and least patient keys */
    PairFilter head_filter; /* (surname, word) of first_heads' ASCII str */
    PairFilter tail_filter; /* the same of first_tails */
} FirstNames;

typedef struct {
    PyObject_HEAD
    Py_ssize_t window;
    int count;
    int tail_count;
    unsigned char lengths[MAX_CIVILITIES];
    unsigned char words[MAX_CIVILITIES][MAX_CIVILITY_LENGTH];
    unsigned char tails[MAX_TAILS][2];
} Civilities;

/* [A-Za-z0-9]: str.isalnum on ASCII, the regexes' [a-z0-9] once lower-cased. */
static inline int is_word(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* \w of a str pattern, on ASCII. */
static inline int is_regex_word(unsigned char c)
{
    return is_word(c) || c == '_';
}

/* engine._is_first_name_separator. */
static inline int is_separator(unsigned char c, int in_file_name)
{
    return c == ' ' || c == ',' || (in_file_name && (c == '_' || c == '.' || c == '-'));
}

/* Between the words of a first name: the regexes' [ '-]. */
static inline int is_joiner(unsigned char c)
{
    return c == ' ' || c == '\'' || c == '-';
}

/* Appends the ASCII, non-empty str of the iterable `container` to the list `words`,
   adding their lengths to *pool_size: 1, else 0 with an exception. */
static int collect_words(PyObject *words, PyObject *container, Py_ssize_t *pool_size)
{
    PyObject *iterator = PyObject_GetIter(container);
    if (iterator == NULL) {
        return 0;
    }
    PyObject *word;
    while ((word = PyIter_Next(iterator)) != NULL) {
        int keep = PyUnicode_Check(word) && PyUnicode_IS_ASCII(word)
                   && PyUnicode_GET_LENGTH(word) > 0;
        if (keep && (PyUnicode_GET_LENGTH(word) > PY_SSIZE_T_MAX / 2 - *pool_size
                     || PyList_Append(words, word) < 0)) {
            if (!PyErr_Occurred()) {
                PyErr_NoMemory();
            }
            Py_DECREF(word);
            Py_DECREF(iterator);
            return 0;
        }
        if (keep) {
            *pool_size += PyUnicode_GET_LENGTH(word);
        }
        Py_DECREF(word);
    }
    Py_DECREF(iterator);
    return !PyErr_Occurred();
}

/* Fills `set` with the ASCII str of the iterable `container`: 1, else 0 with an
   exception. */
static int set_build_from(WordSet *set, PyObject *container)
{
    PyObject *words = PyList_New(0);
    if (words == NULL) {
        return 0;
    }
    Py_ssize_t pool_size = 0;
    int filled = collect_words(words, container, &pool_size) && wordset_fill(set, words, pool_size);
    Py_DECREF(words);
    return filled;
}

/* Reads `folded`, an ASCII str: 1, else 0 with TypeError or ValueError (no value quoted). */
static int parse_folded(const char *function, PyObject *folded, const unsigned char **text,
                        Py_ssize_t *size)
{
    if (!PyUnicode_Check(folded)) {
        PyErr_Format(PyExc_TypeError, "%s(): folded must be str", function);
        return 0;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(folded) < 0) {
        return 0;
    }
#endif
    if (!PyUnicode_IS_ASCII(folded)) {
        PyErr_Format(PyExc_ValueError, "%s(): folded must be ASCII", function);
        return 0;
    }
    *text = PyUnicode_1BYTE_DATA(folded);
    *size = PyUnicode_GET_LENGTH(folded);
    return 1;
}

/* Reads `folded` (parse_folded) and an offset 0 <= offset <= len(folded): 1, else 0 with
   TypeError or ValueError (no value quoted). */
static int parse_text_offset(const char *function, PyObject *folded, PyObject *offset,
                             const unsigned char **text, Py_ssize_t *size, Py_ssize_t *at)
{
    if (!PyUnicode_Check(folded)) {
        PyErr_Format(PyExc_TypeError, "%s(): folded must be str", function);
        return 0;
    }
    if (!PyLong_Check(offset)) {
        PyErr_Format(PyExc_TypeError, "%s(): the offset must be int", function);
        return 0;
    }
    if (!parse_folded(function, folded, text, size)) {
        return 0;
    }
    Py_ssize_t value = PyLong_AsSsize_t(offset);
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear(); /* OverflowError: out of range, as below */
    }
    if (value < 0 || value > *size) {
        PyErr_Format(PyExc_ValueError, "%s(): the offset is out of range", function);
        return 0;
    }
    *at = value;
    return 1;
}

/* (folded, offset, surname, in_file_name) of after() and before(). */
static int parse_hit(const char *function, PyObject *const *args, Py_ssize_t nargs,
                     const unsigned char **text, Py_ssize_t *size, Py_ssize_t *at,
                     int *in_file_name)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "%s() takes 4 arguments, %zd given", function, nargs);
        return 0;
    }
    if (!PyUnicode_Check(args[2])) {
        PyErr_Format(PyExc_TypeError, "%s(): surname must be str", function);
        return 0;
    }
    if (!PyBool_Check(args[3])) {
        PyErr_Format(PyExc_TypeError, "%s(): in_file_name must be bool", function);
        return 0;
    }
    if (!parse_text_offset(function, args[0], args[1], text, size, at)) {
        return 0;
    }
    *in_file_name = args[3] == Py_True;
    return 1;
}

/* A new str: text[start:end] lower-cased, each joiner a space (the words joined by " "). */
static PyObject *lower_words(const unsigned char *text, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *word = PyUnicode_New(end - start, 127);
    if (word == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(word);
    for (Py_ssize_t i = start; i < end; i++) {
        unsigned char c = text[i];
        *out++ = is_word(c) ? lower_ascii(c) : ' ';
    }
    return word;
}

/* Whether text[0:length], lower-cased, is in the container `words`: 1, 0, or -1 with an
   exception. */
static int contains_lower(PyObject *words, const unsigned char *text, Py_ssize_t length)
{
    PyObject *word = lower_words(text, 0, length);
    if (word == NULL) {
        return -1;
    }
    int found = PySequence_Contains(words, word);
    Py_DECREF(word);
    return found;
}

/* (start, end, first): a new tuple that takes `first`'s reference, or NULL (released). */
static PyObject *make_match(Py_ssize_t start, Py_ssize_t end, PyObject *first)
{
    PyObject *match = PyTuple_New(3);
    PyObject *from = PyLong_FromSsize_t(start);
    PyObject *to = PyLong_FromSsize_t(end);
    if (match == NULL || from == NULL || to == NULL) {
        Py_XDECREF(match);
        Py_XDECREF(from);
        Py_XDECREF(to);
        Py_DECREF(first);
        return NULL;
    }
    PyTuple_SET_ITEM(match, 0, from);
    PyTuple_SET_ITEM(match, 1, to);
    PyTuple_SET_ITEM(match, 2, first);
    return match;
}

/* The longest first name of parts[from:to] (spans in order, `to` - `from` >= 1) that
   (surname, first) is a key of full_names, tried from the most words to one: `last`
   fixed (before: the words nearest the surname) or `first` fixed (after). Returns
   (start, end, first), None, or NULL with an exception. */
static PyObject *longest_first_name(FirstNames *self, PyObject *surname,
                                    const unsigned char *text, const Py_ssize_t *starts,
                                    const Py_ssize_t *ends, int count, int keep_last)
{
    for (int n = count; n >= 1; n--) {
        Py_ssize_t start = keep_last ? starts[count - n] : starts[0];
        Py_ssize_t end = keep_last ? ends[count - 1] : ends[n - 1];
        PyObject *first = lower_words(text, start, end);
        if (first == NULL) {
            return NULL;
        }
        PyObject *key = PyTuple_Pack(2, surname, first);
        if (key == NULL) {
            Py_DECREF(first);
            return NULL;
        }
        int found = PyDict_Contains(self->full_names, key);
        Py_DECREF(key);
        if (found < 0) {
            Py_DECREF(first);
            return NULL;
        }
        if (found) {
            return make_match(start, end, first);
        }
        Py_DECREF(first);
    }
    Py_RETURN_NONE;
}

static int may_be_first_word(PyObject *tables, const PairFilter *filter, PyObject *surname,
                             const unsigned char *text, Py_ssize_t length);

/* Engine._first_name_after_py: 1-3 separators after `end`, then up to three words (the
   first checked against first_heads[surname] first), the longest first name first.
   0 <= end <= size; `surname` a str. Returns (start, end, first), None, or NULL with an
   exception. */
static PyObject *first_name_after(FirstNames *self, const unsigned char *text, Py_ssize_t size,
                                  Py_ssize_t end, PyObject *surname, int in_file_name)
{
    /* The text is read first: the surname's entry in first_heads, a dict as large as the
       roster, is looked up only where a first name's first word follows (with 100,000
       patients, each look-up a likely cache miss). */
    Py_ssize_t position = end;
    while (position < size && position - end < 4 && is_separator(text[position], in_file_name)) {
        position++;
    }
    if (position - end < 1 || position - end > 3) {
        Py_RETURN_NONE;
    }
    /* The whole first word, past the window too, as the Python reads it. */
    Py_ssize_t word_end = position;
    while (word_end < size && is_word(text[word_end])) {
        word_end++;
    }
    int found = may_be_first_word(self->first_heads, &self->head_filter, surname,
                                  text + position, word_end - position);
    if (found <= 0) { /* the first word of none of this surname's first names */
        if (found < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    /* pattern.match(lower, end, end + window): the separators (not word characters, so
       all of them), then words of [a-z0-9] joined by one of " '-", within the window. */
    Py_ssize_t window_end = size - end > self->window ? end + self->window : size;
    if (position >= window_end || !is_word(text[position])) {
        Py_RETURN_NONE;
    }
    Py_ssize_t starts[MAX_FIRST_WORDS], ends[MAX_FIRST_WORDS];
    int count = 0;
    Py_ssize_t i = position;
    for (;;) {
        starts[count] = i;
        while (i < window_end && is_word(text[i])) {
            i++;
        }
        ends[count] = i;
        count++;
        if (count == MAX_FIRST_WORDS || i + 1 >= window_end || !is_joiner(text[i])
            || !is_word(text[i + 1])) {
            break;
        }
        i++;
    }
    return longest_first_name(self, surname, text, starts, ends, count, 0);
}

static PyObject *FirstNames_after(FirstNames *self, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *text;
    Py_ssize_t size, end;
    int in_file_name;
    if (!parse_hit("after", args, nargs, &text, &size, &end, &in_file_name)) {
        return NULL;
    }
    return first_name_after(self, text, size, end, args[2], in_file_name);
}

/* Engine._first_name_before_py: the mirror, read backwards within the window; a first
   word the window cut is no whole word. 0 <= start <= size; as first_name_after. */
static PyObject *first_name_before(FirstNames *self, const unsigned char *text,
                                   Py_ssize_t start, PyObject *surname, int in_file_name)
{
    Py_ssize_t window_start = start > self->window ? start - self->window : 0;
    Py_ssize_t group_end = start;
    while (group_end > window_start && is_separator(text[group_end - 1], in_file_name)) {
        group_end--;
    }
    if (start - group_end < 1 || start - group_end > 3) {
        Py_RETURN_NONE;
    }
    Py_ssize_t word_start = group_end;
    while (word_start > window_start && is_word(text[word_start - 1])) {
        word_start--;
    }
    int found = may_be_first_word(self->first_tails, &self->tail_filter, surname,
                                  text + word_start, group_end - word_start); /* as after() */
    if (found <= 0) { /* the last word of none of this surname's first names */
        if (found < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    /* _WORDS matched on the reversed window: the words from the last, read back. */
    Py_ssize_t starts[MAX_FIRST_WORDS], ends[MAX_FIRST_WORDS]; /* last word first */
    int count = 0;
    Py_ssize_t i = group_end;
    for (;;) {
        ends[count] = i;
        while (i > window_start && is_word(text[i - 1])) {
            i--;
        }
        starts[count] = i;
        count++;
        if (count == MAX_FIRST_WORDS || i - 2 < window_start || !is_joiner(text[i - 1])
            || !is_word(text[i - 2])) {
            break;
        }
        i--;
    }
    /* In text order. */
    for (int k = 0; k < count / 2; k++) {
        Py_ssize_t s = starts[k], e = ends[k];
        starts[k] = starts[count - 1 - k];
        ends[k] = ends[count - 1 - k];
        starts[count - 1 - k] = s;
        ends[count - 1 - k] = e;
    }
    int first_word = 0;
    if (starts[0] > 0 && is_word(text[starts[0] - 1])) {
        first_word = 1; /* the window cut a word: not a whole one */
    }
    if (first_word == count) {
        Py_RETURN_NONE;
    }
    return longest_first_name(self, surname, text, starts + first_word, ends + first_word,
                              count - first_word, 1);
}

static PyObject *FirstNames_before(FirstNames *self, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *text;
    Py_ssize_t size, start;
    int in_file_name;
    if (!parse_hit("before", args, nargs, &text, &size, &start, &in_file_name)) {
        return NULL;
    }
    return first_name_before(self, text, start, args[2], in_file_name);
}

/* A word of full_names()' list: (start, end, surname), 0 <= start <= end <= size, surname
   a str. 1, else 0 with an exception. */
static int parse_word(PyObject *word, Py_ssize_t size, Py_ssize_t *start, Py_ssize_t *end,
                      PyObject **surname)
{
    if (!PyTuple_Check(word) || PyTuple_GET_SIZE(word) != 3
        || !PyLong_Check(PyTuple_GET_ITEM(word, 0)) || !PyLong_Check(PyTuple_GET_ITEM(word, 1))
        || !PyUnicode_Check(PyTuple_GET_ITEM(word, 2))) {
        PyErr_SetString(PyExc_TypeError,
                        "full_names(): each word must be a (start, end, surname) tuple");
        return 0;
    }
    *start = PyLong_AsSsize_t(PyTuple_GET_ITEM(word, 0));
    *end = PyLong_AsSsize_t(PyTuple_GET_ITEM(word, 1));
    if (PyErr_Occurred()) {
        PyErr_Clear(); /* OverflowError: out of range, as below */
        *start = -1;
    }
    if (*start < 0 || *start > *end || *end > size) {
        PyErr_SetString(PyExc_ValueError, "full_names(): a word's offsets are out of range");
        return 0;
    }
    *surname = PyTuple_GET_ITEM(word, 2);
    return 1;
}

/* Engine._full_names_walk_py: the walk over a field's roster words (by start, none nested): each word
   not inside the name taken before it is read for a first name of the same patient before
   it, else after it. One call a field, where a call per word and side cost more than the
   reads themselves. Returns None where no word is taken (most fields), else a list of
   (index, match) in word order: match the (start, end, first) read, or None for a word
   inside the name taken before it. */
static PyObject *FirstNames_full_names(FirstNames *self, PyObject *const *args,
                                       Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "full_names() takes 3 arguments, %zd given", nargs);
        return NULL;
    }
    if (!PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "full_names(): words must be a list");
        return NULL;
    }
    if (!PyBool_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "full_names(): in_file_name must be bool");
        return NULL;
    }
    const unsigned char *text;
    Py_ssize_t size;
    if (!parse_folded("full_names", args[0], &text, &size)) {
        return NULL;
    }
    PyObject *words = args[1];
    int in_file_name = args[2] == Py_True;
    PyObject *taken = NULL; /* made at the first word taken */
    Py_ssize_t taken_until = -1;
    /* The list is re-read at each step: a look-up may run Python code (a container's
       __contains__), which could change it. */
    for (Py_ssize_t index = 0; index < PyList_GET_SIZE(words); index++) {
        PyObject *word = PyList_GET_ITEM(words, index);
        Py_INCREF(word); /* and its items, held while read */
        Py_ssize_t start, end;
        PyObject *surname;
        PyObject *match = NULL;
        if (!parse_word(word, size, &start, &end, &surname)) {
            goto fail;
        }
        if (start < taken_until) {
            match = Py_NewRef(Py_None);
        } else {
            match = first_name_before(self, text, start, surname, in_file_name);
            if (match == Py_None) {
                Py_DECREF(match);
                match = first_name_after(self, text, size, end, surname, in_file_name);
            }
            if (match == NULL) {
                goto fail;
            }
            if (match == Py_None) {
                Py_DECREF(match);
                Py_DECREF(word);
                continue;
            }
            Py_ssize_t name_end = PyLong_AsSsize_t(PyTuple_GET_ITEM(match, 1));
            taken_until = name_end > end ? name_end : end;
        }
        if (taken == NULL && (taken = PyList_New(0)) == NULL) {
            goto fail;
        }
        PyObject *item = Py_BuildValue("(nN)", index, match); /* takes match */
        match = NULL;
        if (item == NULL || PyList_Append(taken, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
        Py_DECREF(word);
        continue;
    fail:
        Py_XDECREF(match);
        Py_DECREF(word);
        Py_XDECREF(taken);
        return NULL;
    }
    if (taken == NULL) {
        Py_RETURN_NONE;
    }
    return taken;
}

/* Whether the ASCII word text[0:length] is in name_heads: `in`, exactly. */
static int is_name_head(const FirstNames *self, const unsigned char *text, Py_ssize_t length)
{
    return length == 0 ? self->heads_has_empty : wordset_contains_exact(&self->heads, text, length);
}

/* FNV-1a over the pair's bytes, a 0 between the parts (their lengths are compared too). */
static inline uint64_t hash_pair(const unsigned char *left, Py_ssize_t left_length,
                                 const unsigned char *right, Py_ssize_t right_length)
{
    uint64_t hash = 14695981039346656037ULL;
    for (Py_ssize_t i = 0; i < left_length; i++) {
        hash = (hash ^ left[i]) * 1099511628211ULL;
    }
    hash = hash * 1099511628211ULL;
    for (Py_ssize_t i = 0; i < right_length; i++) {
        hash = (hash ^ right[i]) * 1099511628211ULL;
    }
    return hash;
}

/* The slot of (left, right) in `table`: the pair's or the empty one that ends its probe. */
static PairSlot *pair_slot(const PairTable *table, const unsigned char *left,
                           Py_ssize_t left_length, const unsigned char *right,
                           Py_ssize_t right_length)
{
    size_t i = (size_t)hash_pair(left, left_length, right, right_length) & table->mask;
    for (;; i = (i + 1) & table->mask) {
        PairSlot *slot = &table->slots[i];
        if (slot->patient == NULL) {
            return slot;
        }
        const char *stored = table->pool + slot->offset;
        if (slot->left_length == left_length && slot->length == left_length + right_length
            && memcmp(stored, left, (size_t)left_length) == 0
            && memcmp(stored + left_length, right, (size_t)right_length) == 0) {
            return slot;
        }
    }
}

/* The least patient key of the rostered (left, right), borrowed, or NULL. */
static PyObject *pair_patient(const PairTable *table, const unsigned char *left,
                              Py_ssize_t left_length, const unsigned char *right,
                              Py_ssize_t right_length)
{
    return pair_slot(table, left, left_length, right, right_length)->patient;
}

static void pairs_clear(PairTable *table)
{
    if (table->slots != NULL) {
        for (size_t i = 0; i <= table->mask; i++) {
            Py_CLEAR(table->slots[i].patient);
        }
    }
    PyMem_Free(table->pool);
    PyMem_Free(table->slots);
    table->pool = NULL;
    table->slots = NULL;
    table->mask = 0;
}

/* Fills `table` with the keys of `full_names` that are tuples of two ASCII str and whose
   value is true, each with min() of its value (what the Python returns when it finds
   the pair): 1, else 0 with an exception. */
static int pairs_build(PairTable *table, PyObject *full_names)
{
    Py_ssize_t count = 0, pool_size = 0, at = 0;
    PyObject *key, *value;
    while (PyDict_Next(full_names, &at, &key, &value)) {
        if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
            continue;
        }
        PyObject *left = PyTuple_GET_ITEM(key, 0), *right = PyTuple_GET_ITEM(key, 1);
        if (!PyUnicode_Check(left) || !PyUnicode_IS_ASCII(left) || !PyUnicode_Check(right)
            || !PyUnicode_IS_ASCII(right)) {
            continue;
        }
        Py_ssize_t length = PyUnicode_GET_LENGTH(left) + PyUnicode_GET_LENGTH(right);
        if (length > PY_SSIZE_T_MAX / 2 - pool_size) {
            PyErr_NoMemory();
            return 0;
        }
        pool_size += length;
        count++;
    }
    size_t slots = 8;
    while (slots < (size_t)count * 2 + 1) {
        slots *= 2;
    }
    table->pool = PyMem_Malloc(pool_size > 0 ? (size_t)pool_size : 1);
    table->slots = PyMem_Calloc(slots, sizeof(PairSlot));
    table->mask = slots - 1;
    if (table->pool == NULL || table->slots == NULL) {
        PyErr_NoMemory();
        pairs_clear(table);
        return 0;
    }
    PyObject *min = PyDict_GetItemString(PyEval_GetBuiltins(), "min"); /* borrowed */
    if (min == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FirstNames(): no builtin min");
        return 0;
    }
    Py_ssize_t used = 0;
    at = 0;
    while (PyDict_Next(full_names, &at, &key, &value)) {
        if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
            continue;
        }
        PyObject *left = PyTuple_GET_ITEM(key, 0), *right = PyTuple_GET_ITEM(key, 1);
        if (!PyUnicode_Check(left) || !PyUnicode_IS_ASCII(left) || !PyUnicode_Check(right)
            || !PyUnicode_IS_ASCII(right)) {
            continue;
        }
        Py_ssize_t left_length = PyUnicode_GET_LENGTH(left);
        Py_ssize_t right_length = PyUnicode_GET_LENGTH(right);
        if (used + left_length + right_length > pool_size) {
            PyErr_SetString(PyExc_RuntimeError, "FirstNames(): full_names changed");
            return 0;
        }
        Py_INCREF(value); /* held while read */
        int truth = PyObject_IsTrue(value);
        PyObject *patient = truth > 0 ? PyObject_CallOneArg(min, value) : NULL;
        Py_DECREF(value);
        if (truth < 0 || (truth > 0 && patient == NULL)) {
            return 0;
        }
        if (patient == NULL) {
            continue; /* an empty list: the Python reads on, as if no key */
        }
        const unsigned char *left_text = PyUnicode_1BYTE_DATA(left);
        const unsigned char *right_text = PyUnicode_1BYTE_DATA(right);
        PairSlot *slot = pair_slot(table, left_text, left_length, right_text, right_length);
        if (slot->patient != NULL) { /* equal keys: not in a dict */
            Py_DECREF(patient);
            continue;
        }
        memcpy(table->pool + used, left_text, (size_t)left_length);
        memcpy(table->pool + used + left_length, right_text, (size_t)right_length);
        slot->offset = used;
        slot->left_length = left_length;
        slot->length = left_length + right_length;
        slot->patient = patient;
        used += left_length + right_length;
    }
    return 1;
}

/* Engine._patient_for_name_words_py over `count` words, text[starts[i]:ends[i]] (ASCII),
   one space apart in `text` (so text[starts[a]:ends[b]] is " ".join(words[a:b + 1])).
   Returns the patient key (new) or None. */
static PyObject *patient_for(FirstNames *self, const unsigned char *text,
                             const Py_ssize_t *starts, const Py_ssize_t *ends,
                             Py_ssize_t count)
{
    if (count == 0 || !is_name_head(self, text + starts[0], ends[0] - starts[0])) {
        Py_RETURN_NONE; /* no rostered last or first name starts with the first word */
    }
    Py_ssize_t last = ends[count - 1];
    for (Py_ssize_t cut = 1; cut < count; cut++) {
        /* (left, right) or (right, left) is a key only if right's first word is the first
           word of a part of a key: a name head (checked when the object was made). */
        Py_ssize_t head_end = starts[cut];
        while (head_end < last && text[head_end] != ' ') {
            head_end++;
        }
        if (!is_name_head(self, text + starts[cut], head_end - starts[cut])) {
            continue;
        }
        const unsigned char *left = text + starts[0], *right = text + starts[cut];
        Py_ssize_t left_length = ends[cut - 1] - starts[0], right_length = last - starts[cut];
        PyObject *patient = pair_patient(&self->pairs, left, left_length, right, right_length);
        if (patient == NULL) {
            patient = pair_patient(&self->pairs, right, right_length, left, left_length);
        }
        if (patient != NULL) {
            return Py_NewRef(patient);
        }
    }
    Py_RETURN_NONE;
}

#define STACK_WORDS 16

/* starts and ends of `count` words: `stack` (2 * STACK_WORDS) or a new block (freed with
   PyMem_Free), NULL with MemoryError. */
static Py_ssize_t *word_spans(Py_ssize_t *stack, Py_ssize_t count)
{
    if (count <= STACK_WORDS) {
        return stack;
    }
    if ((size_t)count > PY_SSIZE_T_MAX / (2 * sizeof(Py_ssize_t))) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t *spans = PyMem_Malloc(2 * (size_t)count * sizeof(Py_ssize_t));
    if (spans == NULL) {
        PyErr_NoMemory();
    }
    return spans;
}

/* Engine._context_name_py's simple case: folded[start:end] words of [A-Za-z0-9] one
   space apart. Returns (value, patient), None (any other text: the Python's
   normalise_folded_name decides), or NULL with an exception. */
static PyObject *FirstNames_context_name(FirstNames *self, PyObject *const *args,
                                         Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "context_name() takes 3 arguments, %zd given", nargs);
        return NULL;
    }
    const unsigned char *text;
    Py_ssize_t size, start, end;
    if (!parse_text_offset("context_name", args[0], args[1], &text, &size, &start)
        || !parse_text_offset("context_name", args[0], args[2], &text, &size, &end)) {
        return NULL;
    }
    if (start > end) {
        PyErr_SetString(PyExc_ValueError, "context_name(): start is after end");
        return NULL;
    }
    /* value.split(" "), each piece isalnum: no empty piece (no space at an end, no two
       together), only [A-Za-z0-9] between the spaces. */
    if (start == end || text[start] == ' ' || text[end - 1] == ' ') {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = 1;
    for (Py_ssize_t i = start; i < end; i++) {
        if (text[i] == ' ') {
            if (text[i - 1] == ' ') { /* i > start: text[start] is no space */
                Py_RETURN_NONE;
            }
            count++;
        } else if (!is_word(text[i])) {
            Py_RETURN_NONE;
        }
    }
    PyObject *value = PyUnicode_New(end - start, 127);
    if (value == NULL) {
        return NULL;
    }
    Py_UCS1 *lower = PyUnicode_1BYTE_DATA(value);
    for (Py_ssize_t i = start; i < end; i++) {
        lower[i - start] = lower_ascii(text[i]);
    }
    Py_ssize_t stack[2 * STACK_WORDS];
    Py_ssize_t *starts = word_spans(stack, count);
    if (starts == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    Py_ssize_t *ends = starts + count;
    Py_ssize_t word = 0, length = end - start;
    starts[0] = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        if (lower[i] == ' ') {
            ends[word++] = i;
            starts[word] = i + 1;
        }
    }
    ends[word] = length;
    PyObject *patient = patient_for(self, lower, starts, ends, count);
    if (starts != stack) {
        PyMem_Free(starts);
    }
    if (patient == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, value, patient);
    Py_DECREF(value);
    Py_DECREF(patient);
    return result;
}

/* 0 where `item` is an ASCII str; else -1 with TypeError `not_str` or ValueError
   `not_ascii` (the caller's messages: they name no value). */
static int check_ascii_str(PyObject *item, const char *not_str, const char *not_ascii)
{
    if (!PyUnicode_Check(item)) {
        PyErr_SetString(PyExc_TypeError, not_str);
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(item) < 0) {
        return -1;
    }
#endif
    if (!PyUnicode_IS_ASCII(item)) {
        PyErr_SetString(PyExc_ValueError, not_ascii);
        return -1;
    }
    return 0;
}

/* Engine._patient_for_name_words_py(words), words a list of ASCII str. */
static PyObject *FirstNames_patient_for_words(FirstNames *self, PyObject *words)
{
    if (!PyList_Check(words)) {
        PyErr_SetString(PyExc_TypeError, "patient_for_words(): words must be a list");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(words), total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *word = PyList_GET_ITEM(words, i);
        if (check_ascii_str(word, "patient_for_words(): the words must be str",
                            "patient_for_words(): the words must be ASCII") < 0) {
            return NULL;
        }
        if (PyUnicode_GET_LENGTH(word) >= PY_SSIZE_T_MAX / 2 - total) {
            return PyErr_NoMemory();
        }
        total += PyUnicode_GET_LENGTH(word) + 1;
    }
    if (count == 0) {
        Py_RETURN_NONE;
    }
    /* The words joined by " " (no Python code runs below: the list stays as checked). */
    Py_ssize_t stack[2 * STACK_WORDS];
    Py_ssize_t *starts = word_spans(stack, count);
    unsigned char *text = starts == NULL ? NULL : PyMem_Malloc((size_t)total);
    PyObject *patient = NULL;
    if (text == NULL) {
        if (starts != NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    Py_ssize_t *ends = starts + count, at = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *word = PyList_GET_ITEM(words, i);
        Py_ssize_t length = PyUnicode_GET_LENGTH(word);
        starts[i] = at;
        memcpy(text + at, PyUnicode_1BYTE_DATA(word), (size_t)length);
        at += length;
        ends[i] = at;
        text[at++] = ' '; /* the last one unread: the words end at ends[count - 1] */
    }
    patient = patient_for(self, text, starts, ends, count);
done:
    PyMem_Free(text);
    if (starts != NULL && starts != stack) {
        PyMem_Free(starts);
    }
    return patient;
}

/* Checks that the first word of each ASCII str part of every (str, str) key of
   full_names is a name head (what lets patient_for skip a cut): 1, else 0 with
   ValueError. Keys of other kinds are never equal to a pair of ASCII words. */
static int check_name_heads(FirstNames *self)
{
    Py_ssize_t at = 0;
    PyObject *key, *value;
    while (PyDict_Next(self->full_names, &at, &key, &value)) {
        if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
            continue;
        }
        for (int k = 0; k < 2; k++) {
            PyObject *part = PyTuple_GET_ITEM(key, k);
            if (!PyUnicode_Check(part) || !PyUnicode_IS_ASCII(part)) {
                continue;
            }
            const unsigned char *text = PyUnicode_1BYTE_DATA(part);
            Py_ssize_t length = PyUnicode_GET_LENGTH(part), head = 0;
            while (head < length && text[head] != ' ') {
                head++;
            }
            if (!is_name_head(self, text, head)) {
                PyErr_SetString(PyExc_ValueError,
                                "FirstNames(): name_heads must hold the first word of each "
                                "part of every key of full_names");
                return 0;
            }
        }
    }
    return 1;
}

/* The filter's hash of (surname, word): FNV-1a over the surname's bytes, a separator
   (0xFF, in no ASCII text), and the word's bytes lower-cased, then mixed (MurmurHash3's
   finaliser) so that every bit depends on every byte. */
static inline uint64_t pair_filter_hash(const unsigned char *surname, Py_ssize_t surname_length,
                                        const unsigned char *word, Py_ssize_t length)
{
    uint64_t hash = WORDSET_HASH_START;
    for (Py_ssize_t i = 0; i < surname_length; i++) {
        hash = wordset_hash_step(hash, surname[i]);
    }
    hash = wordset_hash_step(hash, 0xFF);
    for (Py_ssize_t i = 0; i < length; i++) {
        hash = wordset_hash_step(hash, lower_ascii(word[i]));
    }
    hash ^= hash >> 33;
    hash *= 0xff51afd7ed558ccdULL;
    hash ^= hash >> 33;
    hash *= 0xc4ceb9fe1a85ec53ULL;
    hash ^= hash >> 33;
    return hash;
}

/* The block and the two bits of a hash. */
static inline uint64_t *pair_filter_block(const PairFilter *filter, uint64_t hash)
{
    return &filter->blocks[(size_t)(hash >> 12) & filter->mask];
}

static inline uint64_t pair_filter_bits(uint64_t hash)
{
    return (1ULL << (hash & 63)) | (1ULL << ((hash >> 6) & 63));
}

static void pair_filter_clear(PairFilter *filter)
{
    PyMem_Free(filter->blocks);
    filter->blocks = NULL;
    filter->mask = 0;
}

/* Fills `filter` with the (surname, word) pairs of `tables` (first_heads or first_tails):
   each ASCII str key with each ASCII, non-empty str of its container (other items never
   equal a lower-cased ASCII word). About eight pairs a block: with two bits each, about
   3 % of the pairs not in it pass. 1, else 0 with an exception. */
static int pair_filter_build(PairFilter *filter, PyObject *tables)
{
    PyObject *pairs = PyList_New(0); /* (surname, words) of the ASCII surnames */
    if (pairs == NULL) {
        return 0;
    }
    Py_ssize_t count = 0, at = 0;
    PyObject *key, *container;
    while (PyDict_Next(tables, &at, &key, &container)) {
        if (!PyUnicode_Check(key) || PyUnicode_READY(key) < 0 || !PyUnicode_IS_ASCII(key)) {
            PyErr_Clear();
            continue;
        }
        PyObject *words = PyList_New(0);
        Py_ssize_t words_size = 0;
        Py_INCREF(container); /* held while iterated */
        int collected = words != NULL && collect_words(words, container, &words_size);
        Py_DECREF(container);
        PyObject *pair = collected ? PyTuple_Pack(2, key, words) : NULL;
        Py_XDECREF(words);
        if (pair == NULL || PyList_Append(pairs, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(pairs);
            return 0;
        }
        count += PyList_GET_SIZE(PyTuple_GET_ITEM(pair, 1));
        Py_DECREF(pair);
    }
    size_t blocks = 1;
    while (blocks < (size_t)count / 8 + 1) {
        blocks *= 2;
    }
    filter->blocks = PyMem_Calloc(blocks, sizeof(uint64_t));
    filter->mask = blocks - 1;
    if (filter->blocks == NULL) {
        Py_DECREF(pairs);
        PyErr_NoMemory();
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *surname = PyTuple_GET_ITEM(PyList_GET_ITEM(pairs, i), 0);
        PyObject *words = PyTuple_GET_ITEM(PyList_GET_ITEM(pairs, i), 1);
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(words); k++) {
            PyObject *word = PyList_GET_ITEM(words, k);
            /* Hashed lower-cased: a word stored with a capital, which `in` never finds
               lower-cased, passes the filter, a false positive as any other. */
            uint64_t hash = pair_filter_hash(PyUnicode_1BYTE_DATA(surname),
                                             PyUnicode_GET_LENGTH(surname),
                                             PyUnicode_1BYTE_DATA(word), PyUnicode_GET_LENGTH(word));
            *pair_filter_block(filter, hash) |= pair_filter_bits(hash);
        }
    }
    Py_DECREF(pairs);
    return 1;
}

/* Whether text[0:length], lower-cased, may be in the container of `surname` (a str) in
   `tables` (first_heads or first_tails): 0 where it is not, 1 where it is or, for an
   ASCII surname, where `filter` cannot tell; -1 with an exception. A pre-filter only: a
   first name is taken only where full_names holds (surname, first). For an ASCII surname
   the filter answers, without the dict look-up (as large as the roster), the str made
   and the container's `in`; a surname not ASCII is looked up in the dict. An empty word
   is the word of no first name. */
static int may_be_first_word(PyObject *tables, const PairFilter *filter, PyObject *surname,
                             const unsigned char *text, Py_ssize_t length)
{
    if (length == 0) {
        return 0;
    }
    if (PyUnicode_READY(surname) < 0) {
        return -1;
    }
    if (PyUnicode_IS_ASCII(surname)) {
        uint64_t hash = pair_filter_hash(PyUnicode_1BYTE_DATA(surname),
                                         PyUnicode_GET_LENGTH(surname), text, length);
        uint64_t bits = pair_filter_bits(hash);
        return (*pair_filter_block(filter, hash) & bits) == bits;
    }
    PyObject *words = PyDict_GetItemWithError(tables, surname);
    if (words == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(words); /* held across the look-up, which may run Python code */
    int found = contains_lower(words, text, length);
    Py_DECREF(words);
    return found;
}

static PyObject *FirstNames_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *full_names, *first_heads, *first_tails, *name_heads;
    Py_ssize_t window;
    static char *keywords[] = {"full_names", "first_heads", "first_tails", "name_heads",
                               "window", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOn:FirstNames", keywords, &full_names,
                                     &first_heads, &first_tails, &name_heads, &window)) {
        return NULL;
    }
    if (!PyDict_Check(full_names) || !PyDict_Check(first_heads) || !PyDict_Check(first_tails)) {
        PyErr_SetString(PyExc_TypeError, "FirstNames(): the roster tables must be dict");
        return NULL;
    }
    if (!PyAnySet_Check(name_heads)) {
        PyErr_SetString(PyExc_TypeError, "FirstNames(): name_heads must be a frozenset");
        return NULL;
    }
    if (window < 0) {
        PyErr_SetString(PyExc_ValueError, "FirstNames(): window must be 0 or more");
        return NULL;
    }
    PyObject *empty = PyUnicode_New(0, 0);
    if (empty == NULL) {
        return NULL;
    }
    int has_empty = PySet_Contains(name_heads, empty);
    Py_DECREF(empty);
    if (has_empty < 0) {
        return NULL;
    }
    FirstNames *self = (FirstNames *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->full_names = Py_NewRef(full_names);
    self->first_heads = Py_NewRef(first_heads);
    self->first_tails = Py_NewRef(first_tails);
    self->name_heads = Py_NewRef(name_heads);
    self->heads_has_empty = has_empty;
    self->window = window;
    if (!set_build_from(&self->heads, name_heads) || !check_name_heads(self)
        || !pairs_build(&self->pairs, full_names)
        || !pair_filter_build(&self->head_filter, first_heads)
        || !pair_filter_build(&self->tail_filter, first_tails)) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int FirstNames_traverse(FirstNames *self, visitproc visit, void *arg)
{
    Py_VISIT(self->full_names);
    Py_VISIT(self->first_heads);
    Py_VISIT(self->first_tails);
    Py_VISIT(self->name_heads);
    return 0;
}

static int FirstNames_clear(FirstNames *self)
{
    Py_CLEAR(self->full_names);
    Py_CLEAR(self->first_heads);
    Py_CLEAR(self->first_tails);
    Py_CLEAR(self->name_heads);
    return 0;
}

static void FirstNames_dealloc(FirstNames *self)
{
    PyObject_GC_UnTrack(self);
    FirstNames_clear(self);
    wordset_clear(&self->heads);
    pairs_clear(&self->pairs);
    pair_filter_clear(&self->head_filter);
    pair_filter_clear(&self->tail_filter);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef FirstNames_methods[] = {
    {"after", (PyCFunction)(void (*)(void))FirstNames_after, METH_FASTCALL,
     "after(folded, end, surname, in_file_name) -> (start, end, first) of the first name "
     "after a surname hit ending at end, or None"},
    {"before", (PyCFunction)(void (*)(void))FirstNames_before, METH_FASTCALL,
     "before(folded, start, surname, in_file_name) -> (start, end, first) of the first name "
     "before a surname hit starting at start, or None"},
    {"full_names", (PyCFunction)(void (*)(void))FirstNames_full_names, METH_FASTCALL,
     "full_names(folded, words, in_file_name) -> None where no roster word (start, end, "
     "surname) of the list is taken, else [(index, (start, end, first) or None)]: each "
     "word read for a first name before(), else after(), but those inside the name taken "
     "before them (None)"},
    {"context_name", (PyCFunction)(void (*)(void))FirstNames_context_name, METH_FASTCALL,
     "context_name(folded, start, end) -> (value, patient) of the name folded[start:end] "
     "where its words are letters and digits one space apart, else None"},
    {"patient_for_words", (PyCFunction)FirstNames_patient_for_words, METH_O,
     "patient_for_words(words) -> the patient key of the rostered full name the words "
     "make, in either order, or None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FirstNamesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.scan._first_names.FirstNames",
    .tp_doc = "FirstNames(full_names, first_heads, first_tails, name_heads, window): the "
              "first names next to a surname hit and the patients of names, over the "
              "engine's roster tables.",
    .tp_basicsize = sizeof(FirstNames),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = FirstNames_new,
    .tp_dealloc = (destructor)FirstNames_dealloc,
    .tp_traverse = (traverseproc)FirstNames_traverse,
    .tp_clear = (inquiry)FirstNames_clear,
    .tp_methods = FirstNames_methods,
};

/* engine._after_civility_py: a run of 1-3 of " :" ends at `start`, the two characters
   before it a known tail, and a civility word, after a word boundary within the window,
   ends where the run starts. */
static PyObject *Civilities_after(Civilities *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "after() takes 2 arguments, %zd given", nargs);
        return NULL;
    }
    const unsigned char *text;
    Py_ssize_t size, start;
    if (!parse_text_offset("after", args[0], args[1], &text, &size, &start)) {
        return NULL;
    }
    Py_ssize_t low = start > self->window ? start - self->window : 0;
    Py_ssize_t position = start;
    while (position > low && (text[position - 1] == ' ' || text[position - 1] == ':')) {
        position--;
    }
    if (start - position < 1 || start - position > 3 || position - 2 < low) {
        Py_RETURN_FALSE;
    }
    unsigned char a = lower_ascii(text[position - 2]), b = lower_ascii(text[position - 1]);
    int tail = 0;
    for (int k = 0; k < self->tail_count; k++) {
        if (self->tails[k][0] == a && self->tails[k][1] == b) {
            tail = 1;
            break;
        }
    }
    if (!tail) {
        Py_RETURN_FALSE;
    }
    for (int k = 0; k < self->count; k++) {
        Py_ssize_t length = self->lengths[k];
        Py_ssize_t word_start = position - length;
        if (word_start < low) {
            continue;
        }
        const unsigned char *word = self->words[k];
        Py_ssize_t j = 0;
        while (j < length && lower_ascii(text[word_start + j]) == word[j]) {
            j++;
        }
        if (j < length) {
            continue;
        }
        /* \b before the word, in the window's text (its start is a boundary). */
        int word_before = word_start > low && is_regex_word(text[word_start - 1]);
        if (word_before != is_regex_word(word[0])) {
            Py_RETURN_TRUE;
        }
    }
    Py_RETURN_FALSE;
}

/* Copies the ASCII str of `iterable` into the tables: 1, else 0 with an exception. */
static int civilities_fill(Civilities *self, PyObject *iterable, int tails)
{
    PyObject *items = PySequence_List(iterable);
    if (items == NULL) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (check_ascii_str(item, "Civilities(): words and tails must be str",
                            "Civilities(): words and tails must be ASCII") < 0) {
            goto fail;
        }
        Py_ssize_t length = PyUnicode_GET_LENGTH(item);
        const unsigned char *data = PyUnicode_1BYTE_DATA(item);
        if (tails) {
            if (length != 2) {
                continue; /* a slice of two characters never equals it */
            }
            if (self->tail_count == MAX_TAILS) {
                PyErr_SetString(PyExc_ValueError, "Civilities(): too many tails");
                goto fail;
            }
            memcpy(self->tails[self->tail_count++], data, 2);
        } else {
            if (length < 1 || length > MAX_CIVILITY_LENGTH || data[length - 1] == ' '
                || data[length - 1] == ':') {
                PyErr_SetString(PyExc_ValueError, "Civilities(): a word must have 1 to 32 "
                                                  "characters, the last not \" \" or \":\"");
                goto fail;
            }
            if (self->count == MAX_CIVILITIES) {
                PyErr_SetString(PyExc_ValueError, "Civilities(): too many words");
                goto fail;
            }
            memcpy(self->words[self->count], data, (size_t)length);
            self->lengths[self->count++] = (unsigned char)length;
        }
    }
    Py_DECREF(items);
    return 1;
fail:
    Py_DECREF(items);
    return 0;
}

static PyObject *Civilities_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *words, *tails;
    Py_ssize_t window;
    static char *keywords[] = {"words", "tails", "window", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOn:Civilities", keywords, &words, &tails,
                                     &window)) {
        return NULL;
    }
    if (window < 0) {
        PyErr_SetString(PyExc_ValueError, "Civilities(): window must be 0 or more");
        return NULL;
    }
    Civilities *self = (Civilities *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->window = window;
    if (!civilities_fill(self, words, 0) || !civilities_fill(self, tails, 1)) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void Civilities_dealloc(Civilities *self)
{
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Civilities_methods[] = {
    {"after", (PyCFunction)(void (*)(void))Civilities_after, METH_FASTCALL,
     "after(folded, start) -> whether a civility word, then 1-3 of \" :\", ends at start"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CivilitiesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.scan._first_names.Civilities",
    .tp_doc = "Civilities(words, tails, window): the civility before a surname.",
    .tp_basicsize = sizeof(Civilities),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Civilities_new,
    .tp_dealloc = (destructor)Civilities_dealloc,
    .tp_methods = Civilities_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.scan._first_names",
    .m_doc = "The roster-name stage's first-name and civility reads, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__first_names(void)
{
    if (PyType_Ready(&FirstNamesType) < 0 || PyType_Ready(&CivilitiesType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "FirstNames", (PyObject *)&FirstNamesType) < 0
        || PyModule_AddObjectRef(m, "Civilities", (PyObject *)&CivilitiesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
