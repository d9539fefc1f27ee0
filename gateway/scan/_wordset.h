/* gateway/scan/_wordset.h: a set of ASCII words read in place, shared by the scan core's
C modules (_names.c, _first_names.c).

Purpose. The name and address rules look each word of a candidate up in a word list
(stopwords, particles, street types, first names): in compiled Python a slice, a
`.lower()`, a hash and a set look-up a word. Here a word is looked up where it stands in
the folded text's bytes, lower-cased and hashed on the fly (FNV-1a), in an open-addressing
table (linear probing) over the words' bytes in one pool. One definition for both modules:
each includes this header after Python.h, and gets its own static copy.

Contract:
- `wordset_fill(set, words, pool_size)` fills a zeroed WordSet with the str of the list
  `words`, each ASCII (the caller checks), `pool_size` their characters in all; a repeated
  word is stored once, the empty word only as `has_empty`. Words are stored as written: a
  word with a capital is never found by a lower-cased look-up, as in Python. 1, else 0
  with MemoryError (the set is then cleared).
- `wordset_contains_lower(set, text, length)`: whether text[0:length], lower-cased, is a
  word (`low in words`); `wordset_contains_exact`: as written (`word in words`).
  `wordset_find(set, text, length, hash)`: the former, its `wordset_hash_lower` already
  computed, for 0 < length <= max_length.
- `wordset_clear(set)` frees the tables; a cleared or zeroed set holds no word.

Invariants. The table has at least twice as many slots as words (a power of two), so a
probe always ends at an empty slot. A look-up reads `length` bytes of `text` and the pool;
a word longer than the longest stored is never looked up. Read-only once filled: any
thread may look up.
*/
#ifndef PORTIQUE_WORDSET_H
#define PORTIQUE_WORDSET_H

#include <stdint.h>
#include <string.h>

typedef struct {
    Py_ssize_t offset; /* in the pool */
    Py_ssize_t length; /* 0: an empty slot (the empty word is the set's flag below) */
} WordSlot;

typedef struct {
    char *pool;
    WordSlot *slots;
    size_t mask; /* slot count - 1, a power of two at least twice the word count */
    Py_ssize_t max_length;
    int has_empty; /* whether "" is a word (a stripped "'-" is looked up as "") */
} WordSet;

static inline unsigned char lower_ascii(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 0x20) : c;
}

/* FNV-1a over the lower-cased bytes, a byte at a time (wordset_hash_step). */
#define WORDSET_HASH_START 14695981039346656037ULL

static inline uint64_t wordset_hash_step(uint64_t hash, unsigned char low)
{
    return (hash ^ low) * 1099511628211ULL;
}

static inline uint64_t wordset_hash_lower(const unsigned char *text, Py_ssize_t length)
{
    uint64_t hash = WORDSET_HASH_START;
    for (Py_ssize_t i = 0; i < length; i++) {
        hash = wordset_hash_step(hash, lower_ascii(text[i]));
    }
    return hash;
}

/* Whether the lower-cased `text`, of hash `hash` (wordset_hash_lower), is a word of
   `set`; 0 < length <= set->max_length. */
static inline int wordset_find(const WordSet *set, const unsigned char *text,
                               Py_ssize_t length, uint64_t hash)
{
    size_t i = (size_t)hash & set->mask;
    for (;; i = (i + 1) & set->mask) {
        const WordSlot *slot = &set->slots[i];
        if (slot->length == 0) {
            return 0;
        }
        if (slot->length == length) {
            const unsigned char *word = (const unsigned char *)set->pool + slot->offset;
            Py_ssize_t k = 0;
            while (k < length && word[k] == lower_ascii(text[k])) {
                k++;
            }
            if (k == length) {
                return 1;
            }
        }
    }
}

/* Whether the lower-cased `text` is a word of `set` (`low in words`, for any length). */
static inline int wordset_contains_lower(const WordSet *set, const unsigned char *text,
                                         Py_ssize_t length)
{
    if (length <= 0) {
        return length == 0 && set->has_empty;
    }
    if (length > set->max_length) {
        return 0;
    }
    return wordset_find(set, text, length, wordset_hash_lower(text, length));
}

/* Whether `text` is a word of `set`, as written (the hash is the same: stored words are
   hashed lower-cased too). */
static inline int wordset_contains_exact(const WordSet *set, const unsigned char *text,
                                         Py_ssize_t length)
{
    if (length <= 0) {
        return length == 0 && set->has_empty;
    }
    if (length > set->max_length) {
        return 0;
    }
    size_t i = (size_t)wordset_hash_lower(text, length) & set->mask;
    for (;; i = (i + 1) & set->mask) {
        const WordSlot *slot = &set->slots[i];
        if (slot->length == 0) {
            return 0;
        }
        if (slot->length == length
            && memcmp(set->pool + slot->offset, text, (size_t)length) == 0) {
            return 1;
        }
    }
}

static inline void wordset_clear(WordSet *set)
{
    PyMem_Free(set->pool);
    PyMem_Free(set->slots);
    set->pool = NULL;
    set->slots = NULL;
    set->max_length = 0;
    set->has_empty = 0;
}

/* See the header: the ASCII str of the list `words`, `pool_size` characters in all. */
static inline int wordset_fill(WordSet *set, PyObject *words, Py_ssize_t pool_size)
{
    Py_ssize_t count = PyList_GET_SIZE(words);
    size_t slots = 8;
    while (slots < (size_t)count * 2 + 1) {
        slots *= 2;
    }
    set->pool = PyMem_Malloc(pool_size > 0 ? (size_t)pool_size : 1);
    set->slots = PyMem_Calloc(slots, sizeof(WordSlot));
    if (set->pool == NULL || set->slots == NULL) {
        PyErr_NoMemory();
        wordset_clear(set);
        return 0;
    }
    set->mask = slots - 1;
    set->max_length = 0;
    set->has_empty = 0;
    Py_ssize_t used = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *word = PyList_GET_ITEM(words, i);
        Py_ssize_t length = PyUnicode_GET_LENGTH(word);
        const unsigned char *text = PyUnicode_1BYTE_DATA(word);
        if (length == 0) {
            set->has_empty = 1;
            continue;
        }
        size_t k = (size_t)wordset_hash_lower(text, length) & set->mask;
        int stored = 0;
        for (;; k = (k + 1) & set->mask) {
            WordSlot *slot = &set->slots[k];
            if (slot->length == 0) {
                break;
            }
            if (slot->length == length
                && memcmp(set->pool + slot->offset, text, (size_t)length) == 0) {
                stored = 1; /* a repeated word */
                break;
            }
        }
        if (stored) {
            continue;
        }
        memcpy(set->pool + used, text, (size_t)length);
        set->slots[k].offset = used;
        set->slots[k].length = length;
        used += length;
        if (length > set->max_length) {
            set->max_length = length;
        }
    }
    return 1;
}

#endif /* PORTIQUE_WORDSET_H */
