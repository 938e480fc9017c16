/* Optional accelerator for the ASGI adapter: the ``http`` scope of a request, built in one call.
 *
 * http_scope(params: dict, root_path: bytes | None, state: dict, names: dict) -> dict | None
 * mirrors fcgi_async.adapters.asgi._http_scope_py for the requests web servers send nearly
 * always, and declines (returns None) everything else, which the Python reference then builds:
 * a root_path setting, a path with %-escapes or not UTF-8, no REQUEST_URI, an HTTPS or
 * REQUEST_SCHEME other than the plain forms, an HTTP_PROXY param, a param name not in names
 * (not learnt yet), a value that is not bytes, params that are not a dict, a CONTENT_LENGTH
 * that is neither empty nor ASCII digits (fcgi_async.cgi.parse_length; the reference drops it).
 * response_head(status: int, headers, status_lines: dict) -> bytes | None
 * mirrors fcgi_async.adapters.asgi._response_head_py for a status in 200..999 and headers given
 * as a list or tuple of (bytes, bytes) pairs holding no CR, LF or NUL; it declines anything
 * else, for which the reference builds the block or raises its error.
 * The Python functions stay the reference and the same tests run against both.
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

static PyObject *k_content_length, *k_request_uri, *k_query_string, *k_script_name, *k_path_info, *k_https,
    *k_request_scheme, *k_request_method, *k_server_protocol, *k_http_proxy;
static PyObject *s_type, *s_http, *s_asgi, *s_version, *s_spec_version, *s_v30, *s_v24,
    *s_http_version, *s_method, *s_scheme, *s_https, *s_path, *s_raw_path, *s_root_path,
    *s_query_string, *s_headers, *s_client, *s_server, *s_extensions, *s_state, *s_pathsend,
    *s_params, *s_get, *s_1_0, *s_1_1, *s_2, *s_empty;
static PyObject *b_content_type, *b_content_length, *b_empty;

/* A bytes param, borrowed; NULL when absent. *bad is set when present but not bytes. */
static PyObject *
param(PyObject *params, PyObject *key, int *bad)
{
    PyObject *v = PyDict_GetItemWithError(params, key);
    if (v != NULL && !PyBytes_Check(v))
        *bad = 1;
    return v;
}

static int
is(PyObject *v, const char *text)
{
    Py_ssize_t n = (Py_ssize_t)strlen(text);
    return v != NULL && PyBytes_GET_SIZE(v) == n && memcmp(PyBytes_AS_STRING(v), text, n) == 0;
}

/* True when v (bytes) is a length fcgi_async.cgi.parse_length accepts: 1 to
 * MAX_LENGTH_DIGITS (19) ASCII digits. */
static int
is_length(PyObject *v)
{
    const char *s = PyBytes_AS_STRING(v);
    Py_ssize_t n = PyBytes_GET_SIZE(v);
    if (n < 1 || n > 19)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
    }
    return 1;
}

static int
empty(PyObject *v)
{
    return v == NULL || PyBytes_GET_SIZE(v) == 0;
}

/* The headers list, or NULL: *declined set when a name is unknown or a value not bytes. */
static PyObject *
headers_of(PyObject *params, PyObject *names, int *declined)
{
    PyObject *headers = PyList_New(0), *key, *value;
    if (headers == NULL)
        return NULL;
    Py_ssize_t pos = 0;
    while (PyDict_Next(params, &pos, &key, &value)) {
        PyObject *name = PyDict_GetItemWithError(names, key);
        if (name == NULL) {
            if (!PyErr_Occurred())
                *declined = 1; /* a name not learnt yet */
            goto fail;
        }
        if (!PyBytes_Check(value)) {
            *declined = 1;
            goto fail;
        }
        if (name == Py_None)
            continue;
        if (PyBytes_GET_SIZE(value) == 0) {
            int c = PyObject_RichCompareBool(name, b_content_type, Py_EQ);
            if (c == 0)
                c = PyObject_RichCompareBool(name, b_content_length, Py_EQ);
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
    return headers;
fail:
    Py_DECREF(headers);
    return NULL;
}

static PyObject *
http_scope(PyObject *self, PyObject *args)
{
    PyObject *params, *root_path_setting, *state, *names;
    if (!PyArg_ParseTuple(args, "OOO!O!", &params, &root_path_setting, &PyDict_Type, &state,
                          &PyDict_Type, &names))
        return NULL;
    if (!PyDict_CheckExact(params) || root_path_setting != Py_None)
        Py_RETURN_NONE;
    int bad = 0, declined = 0;
    PyObject *request_uri = param(params, k_request_uri, &bad);
    PyObject *query = param(params, k_query_string, &bad);
    PyObject *script = param(params, k_script_name, &bad);
    PyObject *info = param(params, k_path_info, &bad);
    PyObject *https = param(params, k_https, &bad);
    PyObject *scheme = param(params, k_request_scheme, &bad);
    PyObject *method = param(params, k_request_method, &bad);
    PyObject *protocol = param(params, k_server_protocol, &bad);
    PyObject *remote_addr = param(params, k_remote_addr, &bad);
    PyObject *remote_port = param(params, k_remote_port, &bad);
    PyObject *server_addr = param(params, k_server_addr, &bad);
    PyObject *server_name = param(params, k_server_name, &bad);
    PyObject *server_port = param(params, k_server_port, &bad);
    PyObject *content_length = param(params, k_content_length, &bad);
    PyObject *proxy = PyDict_GetItemWithError(params, k_http_proxy);
    if (PyErr_Occurred())
        return NULL;
    if (bad || proxy != NULL || empty(request_uri))
        Py_RETURN_NONE;
    if (!empty(content_length) && !is_length(content_length))
        Py_RETURN_NONE; /* an unknown length is no header: the reference drops it */
    PyObject *scheme_name;
    if (empty(https) && (empty(scheme) || is(scheme, "http")))
        scheme_name = s_http;
    else if ((empty(https) || is(https, "on")) && (empty(scheme) || is(scheme, "https")))
        scheme_name = s_https;
    else
        Py_RETURN_NONE;

    /* The path, as fcgi_async.cgi.split_path cuts it when root_path is not set. */
    const char *uri = PyBytes_AS_STRING(request_uri);
    Py_ssize_t uri_len = PyBytes_GET_SIZE(request_uri);
    const char *mark = memchr(uri, '?', uri_len);
    Py_ssize_t raw_len = mark ? mark - uri : uri_len;
    PyObject *result = NULL, *raw_path = NULL, *query_string = NULL, *root_path = NULL,
             *path = NULL, *headers = NULL, *client = NULL, *server = NULL, *dict = NULL;
    raw_path = PyBytes_FromStringAndSize(uri, raw_len);
    if (raw_path == NULL)
        goto done;
    if (!empty(query))
        query_string = Py_NewRef(query);
    else if (mark)
        query_string = PyBytes_FromStringAndSize(mark + 1, uri_len - raw_len - 1);
    else
        query_string = Py_NewRef(b_empty);
    if (query_string == NULL)
        goto done;
    if (!empty(info)) {
        /* The web server split the path: SCRIPT_NAME (without trailing slashes) + PATH_INFO. */
        const char *sn = script ? PyBytes_AS_STRING(script) : "";
        Py_ssize_t sn_len = script ? PyBytes_GET_SIZE(script) : 0;
        while (sn_len > 0 && sn[sn_len - 1] == '/')
            sn_len--;
        const char *pi = PyBytes_AS_STRING(info);
        Py_ssize_t pi_len = PyBytes_GET_SIZE(info);
        root_path = PyUnicode_DecodeUTF8(sn, sn_len, NULL);
        if (root_path == NULL)
            goto decline_on_decode_error;
        if (sn_len == 0) {
            path = PyUnicode_DecodeUTF8(pi, pi_len, NULL);
        }
        else {
            PyObject *tail = PyUnicode_DecodeUTF8(pi, pi_len, NULL);
            if (tail == NULL)
                goto decline_on_decode_error;
            path = PyUnicode_Concat(root_path, tail);
            Py_DECREF(tail);
        }
        if (path == NULL)
            goto decline_on_decode_error;
    }
    else {
        if (memchr(uri, '%', raw_len) != NULL)
            goto decline; /* %-escapes: the reference unquotes */
        root_path = Py_NewRef(s_empty);
        path = PyUnicode_DecodeUTF8(uri, raw_len, NULL);
        if (path == NULL)
            goto decline_on_decode_error;
    }
    headers = headers_of(params, names, &declined);
    if (headers == NULL)
        goto maybe_decline;
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        goto done;
    int rc = address(remote_addr, remote_port, zero, &client);
    Py_DECREF(zero);
    if (rc <= 0)
        goto address_failed;
    rc = address(empty(server_addr) ? server_name : server_addr, server_port, Py_None, &server);
    if (rc <= 0)
        goto address_failed;

    PyObject *http_version = s_1_1;
    if (is(protocol, "HTTP/1.0"))
        http_version = s_1_0;
    else if (is(protocol, "HTTP/2") || is(protocol, "HTTP/2.0"))
        http_version = s_2;
    PyObject *method_name = NULL;
    if (empty(method))
        method_name = Py_NewRef(s_get);
    else
        method_name = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(method), PyBytes_GET_SIZE(method),
                                             NULL);
    if (method_name == NULL)
        goto done;
    PyObject *asgi = Py_BuildValue("{OOOO}", s_version, s_v30, s_spec_version, s_v24);
    PyObject *pathsend = PyDict_New();
    PyObject *extensions =
        pathsend ? Py_BuildValue("{OOOO}", s_pathsend, pathsend, s_params, params) : NULL;
    PyObject *state_copy = PyDict_Copy(state);
    dict = PyDict_New();
    if (asgi == NULL || extensions == NULL || state_copy == NULL || dict == NULL ||
        PyDict_SetItem(dict, s_type, s_http) < 0 || PyDict_SetItem(dict, s_asgi, asgi) < 0 ||
        PyDict_SetItem(dict, s_http_version, http_version) < 0 ||
        PyDict_SetItem(dict, s_method, method_name) < 0 ||
        PyDict_SetItem(dict, s_scheme, scheme_name) < 0 ||
        PyDict_SetItem(dict, s_path, path) < 0 || PyDict_SetItem(dict, s_raw_path, raw_path) < 0 ||
        PyDict_SetItem(dict, s_root_path, root_path) < 0 ||
        PyDict_SetItem(dict, s_query_string, query_string) < 0 ||
        PyDict_SetItem(dict, s_headers, headers) < 0 ||
        PyDict_SetItem(dict, s_client, client) < 0 ||
        PyDict_SetItem(dict, s_server, server) < 0 ||
        PyDict_SetItem(dict, s_extensions, extensions) < 0 ||
        PyDict_SetItem(dict, s_state, state_copy) < 0) {
        Py_CLEAR(dict);
    }
    Py_XDECREF(asgi);
    Py_XDECREF(pathsend);
    Py_XDECREF(extensions);
    Py_XDECREF(state_copy);
    Py_DECREF(method_name);
    result = dict;
    goto done;
address_failed:
    if (rc < 0)
        goto done;
    goto decline; /* not bytes: cannot happen (checked above), but never build half a scope */
decline_on_decode_error:
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        goto done;
    PyErr_Clear();
    goto decline;
maybe_decline:
    if (!declined)
        goto done;
decline:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(raw_path);
    Py_XDECREF(query_string);
    Py_XDECREF(root_path);
    Py_XDECREF(path);
    Py_XDECREF(headers);
    Py_XDECREF(client);
    Py_XDECREF(server);
    return result;
}

static int
clean(const char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\r' || c == '\n' || c == '\0')
            return 0;
    }
    return 1;
}

static PyObject *
response_head(PyObject *self, PyObject *args)
{
    PyObject *status, *headers, *status_lines;
    if (!PyArg_ParseTuple(args, "OOO!", &status, &headers, &PyDict_Type, &status_lines))
        return NULL;
    if (!PyLong_CheckExact(status) || !(PyList_CheckExact(headers) || PyTuple_CheckExact(headers)))
        Py_RETURN_NONE;
    int overflow;
    long code = PyLong_AsLongAndOverflow(status, &overflow);
    if (code < 200 || code > 999) /* overflow gives -1 */
        Py_RETURN_NONE;
    PyObject *line = PyDict_GetItemWithError(status_lines, status);
    if (line == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE; /* outside 200..999 or unknown: the reference decides */
    }
    if (!PyBytes_CheckExact(line))
        Py_RETURN_NONE;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(headers), size = PyBytes_GET_SIZE(line) + 2;
    PyObject **items = PySequence_Fast_ITEMS(headers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = items[i];
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2)
            Py_RETURN_NONE;
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value))
            Py_RETURN_NONE;
        if (!clean(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)) ||
            !clean(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)))
            Py_RETURN_NONE;
        size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(out);
    memcpy(w, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line));
    w += PyBytes_GET_SIZE(line);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyTuple_GET_ITEM(items[i], 0), *value = PyTuple_GET_ITEM(items[i], 1);
        memcpy(w, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
        w += PyBytes_GET_SIZE(name);
        memcpy(w, ": ", 2);
        w += 2;
        memcpy(w, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
        w += PyBytes_GET_SIZE(value);
        memcpy(w, "\r\n", 2);
        w += 2;
    }
    memcpy(w, "\r\n", 2);
    return out;
}

static PyMethodDef methods[] = {
    {"http_scope", http_scope, METH_VARARGS, "The http scope of a common request, or None."},
    {"response_head", response_head, METH_VARARGS, "A CGI header block, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "Optional C accelerator for the ASGI adapter.", -1,
    methods,
};

static int
init_constants(void)
{
#define B(var, text) if ((var = PyBytes_FromString(text)) == NULL) return -1
#define S(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    B(k_remote_addr, "REMOTE_ADDR");
    B(k_remote_port, "REMOTE_PORT");
    B(k_server_addr, "SERVER_ADDR");
    B(k_server_name, "SERVER_NAME");
    B(k_server_port, "SERVER_PORT");
    B(k_content_length, "CONTENT_LENGTH");
    B(k_request_uri, "REQUEST_URI");
    B(k_query_string, "QUERY_STRING");
    B(k_script_name, "SCRIPT_NAME");
    B(k_path_info, "PATH_INFO");
    B(k_https, "HTTPS");
    B(k_request_scheme, "REQUEST_SCHEME");
    B(k_request_method, "REQUEST_METHOD");
    B(k_server_protocol, "SERVER_PROTOCOL");
    B(k_http_proxy, "HTTP_PROXY");
    B(b_content_type, "content-type");
    B(b_content_length, "content-length");
    B(b_empty, "");
    S(s_type, "type");
    S(s_http, "http");
    S(s_https, "https");
    S(s_asgi, "asgi");
    S(s_version, "version");
    S(s_spec_version, "spec_version");
    S(s_v30, "3.0");
    S(s_v24, "2.4");
    S(s_http_version, "http_version");
    S(s_method, "method");
    S(s_scheme, "scheme");
    S(s_path, "path");
    S(s_raw_path, "raw_path");
    S(s_root_path, "root_path");
    S(s_query_string, "query_string");
    S(s_headers, "headers");
    S(s_client, "client");
    S(s_server, "server");
    S(s_extensions, "extensions");
    S(s_state, "state");
    S(s_pathsend, "http.response.pathsend");
    S(s_params, "fcgi.params");
    S(s_get, "GET");
    S(s_1_0, "1.0");
    S(s_1_1, "1.1");
    S(s_2, "2");
    S(s_empty, "");
#undef B
#undef S
    return 0;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (init_constants() < 0)
        return NULL;
    return PyModule_Create(&module);
}
