/* Optional accelerator for the ASGI adapter: the per-request parts of the scope that loop over
 * every param (headers) or parse numbers (client and server addresses).
 *
 * Mirrors fcgi_async.adapters.asgi._scope_parts_py exactly; the Python function stays the
 * reference and the same tests run against both.
 * scope_parts(params: dict, names: dict, content_headers: frozenset)
 *     -> (headers, client, server) | None
 * None means "not handled here" (a param name missing from names, a value that is not bytes,
 * params that are not a dict): the caller takes the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *k_remote_addr, *k_remote_port, *k_server_addr, *k_server_name, *k_server_port;

/* int(value) when value is non-empty ASCII digits, else a new reference to fallback. */
static PyObject *
port_number(PyObject *value, PyObject *fallback)
{
    if (value != NULL && PyBytes_Check(value) && PyBytes_GET_SIZE(value) > 0) {
        const char *s = PyBytes_AS_STRING(value);
        Py_ssize_t n = PyBytes_GET_SIZE(value), i;
        for (i = 0; i < n; i++) {
            if (s[i] < '0' || s[i] > '9')
                break;
        }
        if (i == n)
            return PyLong_FromString(s, NULL, 10); /* bytes are NUL-terminated */
    }
    Py_INCREF(fallback);
    return fallback;
}

/* (host.decode("latin-1"), port) when host is non-empty bytes, else None. 1 done, 0 not
 * bytes (let Python decide), -1 error. */
static int
address(PyObject *host, PyObject *port, PyObject *no_port, PyObject **out)
{
    if (host == NULL || (PyBytes_Check(host) && PyBytes_GET_SIZE(host) == 0)) {
        *out = Py_NewRef(Py_None);
        return 1;
    }
    if (!PyBytes_Check(host) || (port != NULL && !PyBytes_Check(port)))
        return 0;
    PyObject *text = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(host), PyBytes_GET_SIZE(host), NULL);
    if (text == NULL)
        return -1;
    PyObject *number = port_number(port, no_port);
    if (number == NULL) {
        Py_DECREF(text);
        return -1;
    }
    *out = PyTuple_Pack(2, text, number);
    Py_DECREF(text);
    Py_DECREF(number);
    return *out == NULL ? -1 : 1;
}

/* A param that is non-empty bytes, borrowed; NULL when absent, empty, or on error. */
static PyObject *
truthy(PyObject *params, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(params, key);
    if (v != NULL && PyBytes_Check(v) && PyBytes_GET_SIZE(v) == 0)
        return NULL;
    return v;
}

static PyObject *
scope_parts(PyObject *self, PyObject *args)
{
    PyObject *params, *names, *content_headers;
    if (!PyArg_ParseTuple(args, "OO!O", &params, &PyDict_Type, &names, &content_headers))
        return NULL;
    if (!PyDict_CheckExact(params))
        Py_RETURN_NONE;
    PyObject *headers = PyList_New(0), *client = NULL, *server = NULL, *key, *value;
    if (headers == NULL)
        return NULL;
    Py_ssize_t pos = 0;
    while (PyDict_Next(params, &pos, &key, &value)) {
        PyObject *name = PyDict_GetItemWithError(names, key);
        if (name == NULL) {
            if (PyErr_Occurred())
                goto fail;
            goto none; /* a name not learnt yet */
        }
        if (name == Py_None)
            continue;
        if (!PyBytes_Check(value))
            goto none;
        if (PyBytes_GET_SIZE(value) == 0) {
            int c = PySet_Contains(content_headers, name);
            if (c < 0)
                goto fail;
            if (c)
                continue; /* an empty CONTENT_TYPE / CONTENT_LENGTH is no header */
        }
        PyObject *pair = PyTuple_Pack(2, name, value);
        if (pair == NULL || PyList_Append(headers, pair) < 0) {
            Py_XDECREF(pair);
            goto fail;
        }
        Py_DECREF(pair);
    }
    PyObject *remote_addr = PyDict_GetItemWithError(params, k_remote_addr);
    if (remote_addr == NULL && PyErr_Occurred())
        goto fail;
    PyObject *remote_port = PyDict_GetItemWithError(params, k_remote_port);
    if (remote_port == NULL && PyErr_Occurred())
        goto fail;
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        goto fail;
    int rc = address(remote_addr, remote_port, zero, &client);
    Py_DECREF(zero);
    if (rc < 0)
        goto fail;
    if (rc == 0)
        goto none;
    PyObject *host = truthy(params, k_server_addr);
    if (host == NULL) {
        if (PyErr_Occurred())
            goto fail;
        host = truthy(params, k_server_name);
        if (host == NULL && PyErr_Occurred())
            goto fail;
    }
    PyObject *server_port = PyDict_GetItemWithError(params, k_server_port);
    if (server_port == NULL && PyErr_Occurred())
        goto fail;
    rc = address(host, server_port, Py_None, &server);
    if (rc < 0)
        goto fail;
    if (rc == 0)
        goto none;
    PyObject *result = PyTuple_Pack(3, headers, client, server);
    Py_DECREF(headers);
    Py_DECREF(client);
    Py_DECREF(server);
    return result;
none:
    Py_DECREF(headers);
    Py_XDECREF(client);
    Py_RETURN_NONE;
fail:
    Py_DECREF(headers);
    Py_XDECREF(client);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scope_parts", scope_parts, METH_VARARGS,
     "The headers, client and server of an ASGI scope, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "Optional C accelerator for the ASGI adapter.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    k_remote_addr = PyBytes_FromString("REMOTE_ADDR");
    k_remote_port = PyBytes_FromString("REMOTE_PORT");
    k_server_addr = PyBytes_FromString("SERVER_ADDR");
    k_server_name = PyBytes_FromString("SERVER_NAME");
    k_server_port = PyBytes_FromString("SERVER_PORT");
    if (!k_remote_addr || !k_remote_port || !k_server_addr || !k_server_name || !k_server_port)
        return NULL;
    return PyModule_Create(&module);
}
