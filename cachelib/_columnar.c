/*
 * cachelib._columnar: read a bar query straight into column buffers.
 *
 * Python's sqlite3 module turns every value into a Python object (a year of minute bars is
 * ~780k floats and ~100k tuples); this reads the same rows with the SQLite C API into plain
 * int64/float64 buffers, with the GIL released, and hands them back as bytes for numpy.
 *
 * It links the *same* shared libsqlite3.so.0 that Python's _sqlite3 uses (see setup.py and
 * cachelib.store._columnar_reader): two different copies of SQLite in one process would break
 * each other's file locks (https://www.sqlite.org/howtocorrupt.html, section 2.2.1).
 *
 * The few SQLite declarations are spelled out here so no sqlite3.h is needed to build.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
extern int sqlite3_open_v2(const char *, sqlite3 **, int, const char *);
extern int sqlite3_close(sqlite3 *);
extern int sqlite3_busy_timeout(sqlite3 *, int);
extern int sqlite3_prepare_v2(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
extern int sqlite3_bind_int64(sqlite3_stmt *, int, long long);
extern int sqlite3_step(sqlite3_stmt *);
extern int sqlite3_finalize(sqlite3_stmt *);
extern int sqlite3_column_count(sqlite3_stmt *);
extern int sqlite3_column_type(sqlite3_stmt *, int);
extern long long sqlite3_column_int64(sqlite3_stmt *, int);
extern double sqlite3_column_double(sqlite3_stmt *, int);
extern const char *sqlite3_errmsg(sqlite3 *);
extern const char *sqlite3_libversion(void);

#define SQLITE_OK 0
#define SQLITE_ROW 100
#define SQLITE_DONE 101
#define SQLITE_NULL 5
#define SQLITE_OPEN_READONLY 0x00000001
#define SQLITE_OPEN_URI 0x00000040
#define SQLITE_OPEN_NOMUTEX 0x00008000

#define MAX_COLS 16
#define MAX_PARAMS 16

/* fetch(uri, sql, params, timeout_ms) -> (rows, [bytes per column])
 * Column 0 is read as int64, every other column as float64 (NULL -> NaN). */
static PyObject *fetch(PyObject *self, PyObject *args) {
    const char *uri, *sql;
    PyObject *params;
    int timeout_ms;
    if (!PyArg_ParseTuple(args, "ssO!i", &uri, &sql, &PyTuple_Type, &params, &timeout_ms))
        return NULL;
    Py_ssize_t nparams = PyTuple_GET_SIZE(params);
    if (nparams > MAX_PARAMS) {
        PyErr_SetString(PyExc_ValueError, "too many parameters");
        return NULL;
    }
    long long values[MAX_PARAMS];
    for (Py_ssize_t i = 0; i < nparams; i++) {
        values[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(params, i));
        if (values[i] == -1 && PyErr_Occurred()) return NULL;
    }

    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    char error[512] = {0};
    int ncols = 0, rc = SQLITE_OK;
    size_t rows = 0, capacity = 0;
    void *cols[MAX_COLS] = {0};

    Py_BEGIN_ALLOW_THREADS
    rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, timeout_ms);
        rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    }
    if (rc == SQLITE_OK) {
        ncols = sqlite3_column_count(stmt);
        if (ncols < 1 || ncols > MAX_COLS) {
            snprintf(error, sizeof error, "the query must return 1 to %d columns", MAX_COLS);
            rc = -1;
        }
    }
    for (Py_ssize_t i = 0; rc == SQLITE_OK && i < nparams; i++)
        rc = sqlite3_bind_int64(stmt, (int)i + 1, values[i]);
    while (rc == SQLITE_OK) {
        int step = sqlite3_step(stmt);
        if (step == SQLITE_DONE) break;
        if (step != SQLITE_ROW) { rc = step; break; }
        if (rows == capacity) {
            capacity = capacity ? capacity * 2 : 4096;
            for (int c = 0; c < ncols; c++) {
                void *grown = realloc(cols[c], capacity * 8);
                if (!grown) { snprintf(error, sizeof error, "out of memory"); rc = -1; break; }
                cols[c] = grown;
            }
            if (rc != SQLITE_OK) break;
        }
        ((int64_t *)cols[0])[rows] = (int64_t)sqlite3_column_int64(stmt, 0);
        for (int c = 1; c < ncols; c++)
            ((double *)cols[c])[rows] = sqlite3_column_type(stmt, c) == SQLITE_NULL
                                            ? NAN : sqlite3_column_double(stmt, c);
        rows++;
    }
    if (rc != SQLITE_OK && !error[0])
        snprintf(error, sizeof error, "%s", db ? sqlite3_errmsg(db) : "cannot open the database");
    if (stmt) sqlite3_finalize(stmt);
    if (db) sqlite3_close(db);
    Py_END_ALLOW_THREADS

    PyObject *result = NULL;
    if (rc != SQLITE_OK) {
        PyErr_Format(PyExc_RuntimeError, "columnar read failed: %s", error);
    } else {
        PyObject *buffers = PyList_New(ncols);
        for (int c = 0; buffers && c < ncols; c++) {
            PyObject *b = PyBytes_FromStringAndSize(cols[c] ? (const char *)cols[c] : "", (Py_ssize_t)(rows * 8));
            if (!b) { Py_CLEAR(buffers); break; }
            PyList_SET_ITEM(buffers, c, b);
        }
        if (buffers) result = Py_BuildValue("(nN)", (Py_ssize_t)rows, buffers);
    }
    for (int c = 0; c < MAX_COLS; c++) free(cols[c]);
    return result;
}

static PyObject *libversion(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(sqlite3_libversion());
}

static PyObject *libversion_address(PyObject *self, PyObject *unused) {
    return PyLong_FromVoidPtr((void *)&sqlite3_libversion);
}

static PyMethodDef methods[] = {
    {"fetch", fetch, METH_VARARGS, "fetch(uri, sql, params, timeout_ms) -> (rows, [column bytes])"},
    {"libversion", libversion, METH_NOARGS, "The linked SQLite's version."},
    {"libversion_address", libversion_address, METH_NOARGS, "Address of sqlite3_libversion (copy check)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_columnar", NULL, -1, methods};

PyMODINIT_FUNC PyInit__columnar(void) { return PyModule_Create(&module); }
