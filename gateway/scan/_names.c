/* gateway.scan._names: the scan core's name rules (gateway/scan/names.py) and address
rules (the street and town trims of gateway/scan/engine.py), in C.

Purpose. Every UPPER_FIRST, FIRST_UPPER, CIVILITY_NAME and INTRO_NAME candidate of a
message is read word by word (names.pair_span, names.trigger_name_span), and every display
name and file name too (names.name_words); so is every STREET, STREET_CONTEXT and
POSTCODE_TOWN candidate (engine._street_end, engine._town_end). In compiled Python each
word costs a slice, a `.lower()`, a hash and a set look-up, and the walk around them boxes
its offsets: some hundreds of instructions a word, on the dozens of candidates of a dense
lab order. Here each word is read in place in the folded text's own storage: its letters
are lower-cased and hashed on the fly, and looked up in a small open-addressing table
built once. A dense 2 KB order costs 20k instructions fewer for the name rules
(load-tests/callgrind_scan.py, 610.0k to 589.9k), and 6.7k fewer for the address rules
(542.5k to 535.8k: the street and town trims, call included, from ~8k to ~1.4k).

Contract (names.py and engine.py rely on it; tests/scan/test_names_native.py and
test_addresses_native.py check it against the Python functions, which stay as the
fallback and the oracle):
- `NameRules(stopwords, particles)`: two iterables of ASCII str, names.STOPWORDS and
  names.PARTICLES (one definition of the word lists: the Python's). A word is looked up
  as its lower-cased text, compared with the stored words byte for byte (as `low in
  STOPWORDS` compares str).
- `is_name_word(folded, start, end)`, `pair_span(folded, start, end)` and
  `trigger_name_span(folded, start, end)` return what names.is_name_word,
  names._pair_span_py and names._trigger_name_span_py return, for
  0 <= start <= end <= len(folded).
- `name_words(folded, start, end)` returns what names._name_words_py returns for
  0 <= start and 0 <= end: an end past the text is the text's end, a start at or past
  the end gives [] (as the Python's slicing and `findall(folded, start, end)` read them).
- `AddressRules(street_types, street_particles, stopwords, town_particles)`: four
  iterables of ASCII str, engine._STREET_TYPE_WORDS, engine._PARTICLES, names.STOPWORDS
  and engine._TOWN_PARTICLES, looked up as NameRules looks up its words (the empty word
  too: a word of "'" and "-" alone is stripped to it).
- `street_end(text, folded, start, end)` returns what engine._street_end_py returns and
  `town_end(folded, start, end)` what engine._town_end_py returns, for
  0 <= start <= end <= len(folded). `text` is the field's text (any str) and `folded` its
  folding, of the same length (else ValueError): a word's first character is read in
  `text`, with Unicode's rules past ASCII (Py_UNICODE_ISUPPER and Py_UNICODE_ISDIGIT,
  what str.isupper() and str.isdigit() read of one character). town_end returns
  start + 5 when the span is shorter, as the Python does: the engine's spans start with
  the five digits of a postcode.
- `folded` must be an ASCII str (gateway/scan/_fold.py folds to ASCII), else ValueError;
  offsets must be int (TypeError) within the ranges above (ValueError). A wrong argument
  count or type raises TypeError. No message names a value: the texts are patient data.

Invariants. Holds the GIL (a candidate takes well under a microsecond) and keeps no state
but the word tables, filled when the object is made and read-only after, so every thread
may call it. Every offset is checked against the text's length before any byte is read
(street_end's `text` against the same length): the walks then read only within
[start, end). A word longer than the longest stored word is never looked up (it cannot
be one).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_wordset.h"

typedef struct {
    PyObject_HEAD
    WordSet stopwords;
    WordSet particles;
} NameRules;

static inline int is_capital(unsigned char c)
{
    return c >= 'A' && c <= 'Z';
}

static inline int is_letter(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Fills `set` with the words of `iterable` (ASCII str): 1, else 0 with an exception
   (`owner`: the type whose argument `what` is). */
static int set_build(WordSet *set, PyObject *iterable, const char *owner, const char *what)
{
    PyObject *words = PySequence_List(iterable);
    if (words == NULL) {
        return 0;
    }
    Py_ssize_t count = PyList_GET_SIZE(words);
    Py_ssize_t pool_size = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *word = PyList_GET_ITEM(words, i);
        if (!PyUnicode_Check(word)) {
            PyErr_Format(PyExc_TypeError, "%s(): %s must be str", owner, what);
            goto fail;
        }
        if (!PyUnicode_IS_ASCII(word)) {
            PyErr_Format(PyExc_ValueError, "%s(): %s must be ASCII", owner, what);
            goto fail;
        }
        if (PyUnicode_GET_LENGTH(word) > PY_SSIZE_T_MAX / 2 - pool_size) {
            PyErr_NoMemory();
            goto fail;
        }
        pool_size += PyUnicode_GET_LENGTH(word);
    }
    if (!wordset_fill(set, words, pool_size)) {
        goto fail;
    }
    Py_DECREF(words);
    return 1;
fail:
    Py_DECREF(words);
    wordset_clear(set);
    return 0;
}

/* names.is_name_word: capitalised, and without its trailing "'" and "-" two characters
   or more and no stopword. 0 <= start <= end <= the text's length. */
static int is_name_word(const NameRules *rules, const unsigned char *text, Py_ssize_t start,
                        Py_ssize_t end)
{
    if (end - start < 2 || !is_capital(text[start])) {
        return 0;
    }
    Py_ssize_t stop = end;
    while (stop > start && (text[stop - 1] == '\'' || text[stop - 1] == '-')) {
        stop--;
    }
    if (stop - start < 2) {
        return 0;
    }
    return !wordset_contains_lower(&rules->stopwords, text + start, stop - start);
}

/* names._is_capital_particle. */
static int is_capital_particle(const NameRules *rules, const unsigned char *text,
                               Py_ssize_t start, Py_ssize_t end)
{
    return end > start && is_capital(text[start])
           && wordset_contains_lower(&rules->particles, text + start, end - start);
}

/* names._word_end: the end of text[start:end] without its trailing "." and ":". */
static Py_ssize_t word_end_of(const unsigned char *text, Py_ssize_t start, Py_ssize_t end)
{
    while (end > start && (text[end - 1] == '.' || text[end - 1] == ':')) {
        end--;
    }
    return end;
}

/* str.find(" ", start, end) and str.rfind(" ", start, end), 0 <= start, end <= length. */
static Py_ssize_t find_space(const unsigned char *text, Py_ssize_t start, Py_ssize_t end)
{
    if (end <= start) {
        return -1;
    }
    const unsigned char *found = memchr(text + start, ' ', (size_t)(end - start));
    return found != NULL ? found - text : -1;
}

static Py_ssize_t rfind_space(const unsigned char *text, Py_ssize_t start, Py_ssize_t end)
{
    for (Py_ssize_t i = end - 1; i >= start; i--) {
        if (text[i] == ' ') {
            return i;
        }
    }
    return -1;
}

/* Reads `folded`, `start` and `end` (the arguments of `function`): the text's bytes, the
   offsets. `clamp`: an end past the text is its end (name_words), else
   start <= end <= length is required. 1, else 0 with TypeError or ValueError (no value
   quoted). */
static inline int read_span(const char *function, PyObject *folded, PyObject *start_arg,
                            PyObject *end_arg, int clamp, const unsigned char **text,
                            Py_ssize_t *start, Py_ssize_t *end)
{
    if (!PyUnicode_Check(folded)) {
        PyErr_Format(PyExc_TypeError, "%s(): folded must be str", function);
        return 0;
    }
    if (!PyLong_Check(start_arg) || !PyLong_Check(end_arg)) {
        PyErr_Format(PyExc_TypeError, "%s(): start and end must be int", function);
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
    Py_ssize_t length = PyUnicode_GET_LENGTH(folded);
    Py_ssize_t first = PyLong_AsSsize_t(start_arg);
    Py_ssize_t last = first == -1 && PyErr_Occurred() ? -1 : PyLong_AsSsize_t(end_arg);
    if ((first == -1 || last == -1) && PyErr_Occurred()) {
        PyErr_Clear(); /* OverflowError: out of range, as below */
        first = -1;
    }
    if (clamp) {
        if (first >= 0 && last > length) {
            last = length;
        }
        if (first >= 0 && last >= 0 && first > last) {
            first = last; /* an empty span */
        }
    }
    if (first < 0 || first > last || last > length) {
        PyErr_Format(PyExc_ValueError, "%s(): start and end out of range", function);
        return 0;
    }
    *text = PyUnicode_1BYTE_DATA(folded);
    *start = first;
    *end = last;
    return 1;
}

/* Reads the arguments (folded, start, end) of `function`, as read_span. */
static int parse_span(const char *function, PyObject *const *args, Py_ssize_t nargs,
                      int clamp, const unsigned char **text, Py_ssize_t *start,
                      Py_ssize_t *end)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s() takes 3 arguments, %zd given", function, nargs);
        return 0;
    }
    return read_span(function, args[0], args[1], args[2], clamp, text, start, end);
}

static PyObject *make_span(Py_ssize_t start, Py_ssize_t end)
{
    PyObject *first = PyLong_FromSsize_t(start);
    if (first == NULL) {
        return NULL;
    }
    PyObject *last = PyLong_FromSsize_t(end);
    if (last == NULL) {
        Py_DECREF(first);
        return NULL;
    }
    PyObject *span = PyTuple_New(2);
    if (span == NULL) {
        Py_DECREF(first);
        Py_DECREF(last);
        return NULL;
    }
    PyTuple_SET_ITEM(span, 0, first);
    PyTuple_SET_ITEM(span, 1, last);
    return span;
}

static PyObject *NameRules_is_name_word(NameRules *self, PyObject *const *args,
                                        Py_ssize_t nargs)
{
    const unsigned char *text;
    Py_ssize_t start, end;
    if (!parse_span("is_name_word", args, nargs, 0, &text, &start, &end)) {
        return NULL;
    }
    return PyBool_FromLong(is_name_word(self, text, start, end));
}

/* names._pair_span_py: the words one space apart, read last to first. */
static PyObject *NameRules_pair_span(NameRules *self, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *text;
    Py_ssize_t start, end;
    if (!parse_span("pair_span", args, nargs, 0, &text, &start, &end)) {
        return NULL;
    }
    int name_follows = 0;
    Py_ssize_t word_end = end;
    for (;;) {
        Py_ssize_t space = rfind_space(text, start, word_end);
        Py_ssize_t word_start = space >= 0 ? space + 1 : start;
        if (!is_name_word(self, text, word_start, word_end)
            && !(name_follows && is_capital_particle(self, text, word_start, word_end))) {
            Py_RETURN_NONE;
        }
        if (space < 0) {
            return make_span(start, end);
        }
        name_follows = 1;
        word_end = space;
    }
}

/* names._trigger_name_span_py: the trigger token skipped, the tokens after it read last
   to first, the name the first run of name words. */
static PyObject *NameRules_trigger_name_span(NameRules *self, PyObject *const *args,
                                             Py_ssize_t nargs)
{
    const unsigned char *text;
    Py_ssize_t start, end;
    if (!parse_span("trigger_name_span", args, nargs, 0, &text, &start, &end)) {
        return NULL;
    }
    Py_ssize_t trigger_end = end;
    Py_ssize_t token_start = start;
    while (token_start < end) {
        Py_ssize_t space = find_space(text, token_start, end);
        Py_ssize_t token_end = space >= 0 ? space : end;
        if (word_end_of(text, token_start, token_end) > token_start) {
            trigger_end = token_end;
            break;
        }
        token_start = token_end + 1;
    }
    Py_ssize_t name_start = -1, name_end = -1;
    int next_is_name = 0;
    Py_ssize_t next_start = -1;
    Py_ssize_t token_end = end;
    while (token_end > trigger_end) {
        Py_ssize_t space = rfind_space(text, trigger_end, token_end);
        token_start = space + 1; /* space >= trigger_end: a space follows the trigger */
        Py_ssize_t word_end = word_end_of(text, token_start, token_end);
        token_end = space;
        if (word_end == token_start) {
            continue;
        }
        int is_name = is_name_word(self, text, token_start, word_end);
        if (!is_name && next_is_name && next_start - word_end == 1
            && is_capital_particle(self, text, token_start, word_end)) {
            is_name = 1; /* a capitalised particle before a name word ("Le Roux") */
        }
        if (is_name) {
            if (!next_is_name) {
                name_end = word_end;
            }
            name_start = token_start;
        }
        next_is_name = is_name;
        next_start = token_start;
    }
    if (name_start < 0) {
        Py_RETURN_NONE;
    }
    return make_span(name_start, name_end);
}

/* A word of name_words: its span, and whether it is (part of) a name. */
typedef struct {
    Py_ssize_t start;
    Py_ssize_t end;
    int is_name;
} Word;

/* names._name_words_py: the words of the regex [A-Za-z][A-Za-z'-]* in text[start:end],
   each its span or (-1, -1). */
static PyObject *NameRules_name_words(NameRules *self, PyObject *const *args,
                                      Py_ssize_t nargs)
{
    const unsigned char *text;
    Py_ssize_t start, end;
    if (!parse_span("name_words", args, nargs, 1, &text, &start, &end)) {
        return NULL;
    }
    /* A word is a letter and what follows it, words apart: at most (n + 1) / 2. */
    Py_ssize_t most = (end - start + 1) / 2;
    Word *words = PyMem_Malloc(sizeof(Word) * (size_t)(most > 0 ? most : 1));
    if (words == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t count = 0;
    Py_ssize_t i = start;
    while (i < end) {
        if (!is_letter(text[i])) {
            i++;
            continue;
        }
        Py_ssize_t j = i + 1;
        while (j < end && (is_letter(text[j]) || text[j] == '\'' || text[j] == '-')) {
            j++;
        }
        words[count].start = i;
        words[count].end = j;
        words[count].is_name = is_name_word(self, text, i, j);
        count++;
        i = j + 1; /* text[j], if any, is no word character */
    }
    for (Py_ssize_t k = count - 2; k >= 0; k--) {
        if (!words[k].is_name && words[k + 1].is_name
            && words[k + 1].start - words[k].end == 1
            && is_capital_particle(self, text, words[k].start, words[k].end)) {
            words[k].is_name = 1;
        }
    }
    PyObject *result = PyList_New(count);
    if (result == NULL) {
        PyMem_Free(words);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *span = words[k].is_name ? make_span(words[k].start, words[k].end)
                                          : make_span(-1, -1);
        if (span == NULL) {
            PyMem_Free(words);
            Py_DECREF(result);
            return NULL;
        }
        PyList_SET_ITEM(result, k, span);
    }
    PyMem_Free(words);
    return result;
}

static PyObject *NameRules_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *stopwords, *particles;
    static char *keywords[] = {"stopwords", "particles", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:NameRules", keywords, &stopwords,
                                     &particles)) {
        return NULL;
    }
    NameRules *self = (NameRules *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    /* tp_alloc zeroes the object: the sets are empty until built. */
    if (!set_build(&self->stopwords, stopwords, "NameRules", "stopwords")
        || !set_build(&self->particles, particles, "NameRules", "particles")) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void NameRules_dealloc(NameRules *self)
{
    wordset_clear(&self->stopwords);
    wordset_clear(&self->particles);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef NameRules_methods[] = {
    {"is_name_word", (PyCFunction)(void (*)(void))NameRules_is_name_word, METH_FASTCALL,
     "is_name_word(folded, start, end) -> whether folded[start:end] can be part of a name"},
    {"pair_span", (PyCFunction)(void (*)(void))NameRules_pair_span, METH_FASTCALL,
     "pair_span(folded, start, end) -> (start, end) of a name pair, or None"},
    {"trigger_name_span", (PyCFunction)(void (*)(void))NameRules_trigger_name_span,
     METH_FASTCALL,
     "trigger_name_span(folded, start, end) -> the name after a trigger, or None"},
    {"name_words", (PyCFunction)(void (*)(void))NameRules_name_words, METH_FASTCALL,
     "name_words(folded, start, end) -> each word's span, or (-1, -1) when no name word"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject NameRulesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.scan._names.NameRules",
    .tp_doc = "The name rules of gateway/scan/names.py, over its stopwords and particles.",
    .tp_basicsize = sizeof(NameRules),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = NameRules_new,
    .tp_dealloc = (destructor)NameRules_dealloc,
    .tp_methods = NameRules_methods,
};

/* The address rules: engine.py's street and town trims, over its word lists. */
typedef struct {
    PyObject_HEAD
    WordSet street_types;
    WordSet street_particles;
    WordSet stopwords;
    WordSet town_particles;
} AddressRules;

/* engine._is_address_code ([A-Za-z'-]) and lower_ascii in one read: each address
   character lower-cased, any other byte 0. */
static const unsigned char ADDRESS_LOWER[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, '\'', 0, 0, 0, 0, 0, '-', 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 0, 0, 0, 0, 0,
    0, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 0, 0, 0, 0, 0,
    /* 128-255: 0 (never read: `folded` is ASCII) */
};

/* A word of engine._address_words: its span, the hash of its lower-cased bytes, and
   whether it is letters only (no "'" or "-" to strip or split at). */
typedef struct {
    Py_ssize_t start;
    Py_ssize_t end;
    uint64_t hash;
    int letters_only;
} AddressWord;

/* The next word of engine._address_words in text[*position:end]: 1 with it and
   *position past it and the character after it, else 0 (no word left). */
static inline int next_address_word(const unsigned char *text, Py_ssize_t *position,
                                    Py_ssize_t end, AddressWord *word)
{
    Py_ssize_t i = *position;
    while (i < end && ADDRESS_LOWER[text[i]] == 0) {
        i++;
    }
    if (i >= end) {
        return 0;
    }
    unsigned char low = ADDRESS_LOWER[text[i]];
    unsigned char all = low; /* 0x40 stays set while every byte is a letter ('a'-'z') */
    uint64_t hash = wordset_hash_step(WORDSET_HASH_START, low);
    Py_ssize_t j = i + 1;
    while (j < end && (low = ADDRESS_LOWER[text[j]]) != 0) {
        hash = wordset_hash_step(hash, low);
        all &= low;
        j++;
    }
    word->start = i;
    word->end = j;
    word->hash = hash;
    word->letters_only = (all & 0x40) != 0;
    *position = j + 1; /* text[j], if any, is no word character */
    return 1;
}

/* Whether `word` is a word of `set` (wordset_contains_lower, its hash already read). */
static inline int set_contains_word(const WordSet *set, const unsigned char *text,
                                    const AddressWord *word)
{
    Py_ssize_t length = word->end - word->start; /* > 0 */
    return length <= set->max_length && wordset_find(set, text + word->start, length, word->hash);
}

/* An int result: `start_arg` or `end_arg` itself where it is that int (no new object:
   a street is mostly kept whole), else a new one. */
static PyObject *offset_result(Py_ssize_t result, Py_ssize_t start, PyObject *start_arg,
                               Py_ssize_t end, PyObject *end_arg)
{
    if (result == end && PyLong_CheckExact(end_arg)) {
        return Py_NewRef(end_arg);
    }
    if (result == start && PyLong_CheckExact(start_arg)) {
        return Py_NewRef(start_arg);
    }
    return PyLong_FromSsize_t(result);
}

/* Whether an address word with a "'" or "-" is a particle to skip: stripped of its
   leading and trailing ones, a particle, or a particle and "'" ("d'Alsace"). */
static int is_street_particle(const AddressRules *rules, const unsigned char *text,
                              Py_ssize_t start, Py_ssize_t end)
{
    while (start < end && (text[start] == '\'' || text[start] == '-')) {
        start++;
    }
    while (end > start && (text[end - 1] == '\'' || text[end - 1] == '-')) {
        end--;
    }
    if (wordset_contains_lower(&rules->street_particles, text + start, end - start)) {
        return 1;
    }
    Py_ssize_t apostrophe = start;
    while (apostrophe < end && text[apostrophe] != '\'') {
        apostrophe++;
    }
    return apostrophe < end
           && wordset_contains_lower(&rules->street_particles, text + start, apostrophe - start);
}

/* engine._street_end_py: the words up to the street type, then the name's: particles
   skipped, a word written with a capital or a digit first taken, any other the end.
   0 <= start <= end <= the length of both texts; `original` is `text`'s str. */
static Py_ssize_t street_end(const AddressRules *rules, PyObject *original,
                             const unsigned char *text, Py_ssize_t start, Py_ssize_t end)
{
    int after_type = 0, taken = 0;
    Py_ssize_t last_end = start;
    Py_ssize_t position = start;
    AddressWord word;
    while (next_address_word(text, &position, end, &word)) {
        if (!after_type) {
            if (set_contains_word(&rules->street_types, text, &word)) {
                after_type = 1;
                last_end = word.end;
            }
            continue;
        }
        if (word.letters_only ? set_contains_word(&rules->street_particles, text, &word)
                              : is_street_particle(rules, text, word.start, word.end)) {
            continue;
        }
        /* The written word's first character: Unicode's rules past ASCII ("É"), as
           str.isupper() and str.isdigit() read one character. */
        Py_UCS4 first = PyUnicode_READ_CHAR(original, word.start);
        int upper_or_digit = first < 128 ? (is_capital((unsigned char)first)
                                            || (first >= '0' && first <= '9'))
                                         : (Py_UNICODE_ISUPPER(first)
                                            || Py_UNICODE_ISDIGIT(first));
        if (!upper_or_digit) {
            break;
        }
        last_end = word.end;
        taken = 1;
    }
    return taken ? last_end : start;
}

static PyObject *AddressRules_street_end(AddressRules *self, PyObject *const *args,
                                         Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "street_end() takes 4 arguments, %zd given", nargs);
        return NULL;
    }
    PyObject *original = args[0];
    if (!PyUnicode_Check(original)) {
        PyErr_SetString(PyExc_TypeError, "street_end(): text must be str");
        return NULL;
    }
    const unsigned char *text;
    Py_ssize_t start, end;
    if (!read_span("street_end", args[1], args[2], args[3], 0, &text, &start, &end)) {
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(original) < 0) {
        return NULL;
    }
#endif
    if (PyUnicode_GET_LENGTH(original) != PyUnicode_GET_LENGTH(args[1])) {
        PyErr_SetString(PyExc_ValueError,
                        "street_end(): text and folded must have the same length");
        return NULL;
    }
    Py_ssize_t result = street_end(self, original, text, start, end);
    return offset_result(result, start, args[2], end, args[3]);
}

/* engine._town_end_py: past the postcode's five characters, the words up to the first
   stopword that is no town particle ("Merci"). */
static PyObject *AddressRules_town_end(AddressRules *self, PyObject *const *args,
                                       Py_ssize_t nargs)
{
    const unsigned char *text;
    Py_ssize_t start, end;
    if (!parse_span("town_end", args, nargs, 0, &text, &start, &end)) {
        return NULL;
    }
    /* start + 5 may pass end (and the text): returned as the Python returns it, never read. */
    Py_ssize_t last = start + 5;
    Py_ssize_t position = last;
    AddressWord word;
    while (next_address_word(text, &position, end, &word)) {
        if (set_contains_word(&self->stopwords, text, &word)
            && !set_contains_word(&self->town_particles, text, &word)) {
            break;
        }
        last = word.end;
    }
    return offset_result(last, start, args[1], end, args[2]);
}

static PyObject *AddressRules_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *street_types, *street_particles, *stopwords, *town_particles;
    static char *keywords[] = {"street_types", "street_particles", "stopwords",
                               "town_particles", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:AddressRules", keywords,
                                     &street_types, &street_particles, &stopwords,
                                     &town_particles)) {
        return NULL;
    }
    AddressRules *self = (AddressRules *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    /* tp_alloc zeroes the object: the sets are empty until built. */
    if (!set_build(&self->street_types, street_types, "AddressRules", "street_types")
        || !set_build(&self->street_particles, street_particles, "AddressRules",
                      "street_particles")
        || !set_build(&self->stopwords, stopwords, "AddressRules", "stopwords")
        || !set_build(&self->town_particles, town_particles, "AddressRules",
                      "town_particles")) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void AddressRules_dealloc(AddressRules *self)
{
    wordset_clear(&self->street_types);
    wordset_clear(&self->street_particles);
    wordset_clear(&self->stopwords);
    wordset_clear(&self->town_particles);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef AddressRules_methods[] = {
    {"street_end", (PyCFunction)(void (*)(void))AddressRules_street_end, METH_FASTCALL,
     "street_end(text, folded, start, end) -> the end of a street candidate's name, or start"},
    {"town_end", (PyCFunction)(void (*)(void))AddressRules_town_end, METH_FASTCALL,
     "town_end(folded, start, end) -> the end of a postcode's town"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AddressRulesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.scan._names.AddressRules",
    .tp_doc = "The street and town trims of gateway/scan/engine.py, over its word lists.",
    .tp_basicsize = sizeof(AddressRules),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = AddressRules_new,
    .tp_dealloc = (destructor)AddressRules_dealloc,
    .tp_methods = AddressRules_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.scan._names",
    .m_doc = "The scan core's name and address rules, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__names(void)
{
    if (PyType_Ready(&NameRulesType) < 0 || PyType_Ready(&AddressRulesType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "NameRules", (PyObject *)&NameRulesType) < 0
        || PyModule_AddObjectRef(m, "AddressRules", (PyObject *)&AddressRulesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
