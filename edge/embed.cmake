# Generates a C file holding the demo page's files (cmake -P, with OUT and
# FILES as "urlpath=file|..."), so the binary serves them without a data dir.
set(body "#include <stddef.h>\n#include <string.h>\n\n")
set(table "")
string(REPLACE "|" ";" FILES "${FILES}")
set(i 0)
foreach(pair ${FILES})
  string(REPLACE "=" ";" kv "${pair}")
  list(GET kv 0 url)
  list(GET kv 1 path)
  file(READ "${path}" hex HEX)
  string(LENGTH "${hex}" hlen)
  math(EXPR n "${hlen} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  if(path MATCHES "\\.js$")
    set(ctype "text/javascript; charset=utf-8")
  elseif(path MATCHES "\\.css$")
    set(ctype "text/css; charset=utf-8")
  else()
    set(ctype "text/html; charset=utf-8")
  endif()
  string(APPEND body "static const unsigned char f${i}[${n} + 1] = {${hex} 0};\n")
  string(APPEND table "\t{\"${url}\", f${i}, ${n}, \"${ctype}\"},\n")
  math(EXPR i "${i} + 1")
endforeach()
string(APPEND body "
static const struct { const char *path; const unsigned char *data; size_t len; const char *ctype; }
files[] = {\n${table}};

int static_lookup(const char *path, const unsigned char **data, size_t *len, const char **ctype);
int static_lookup(const char *path, const unsigned char **data, size_t *len, const char **ctype)
{
\tfor (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
\t\tif (strcmp(path, files[i].path) == 0) {
\t\t\t*data = files[i].data;
\t\t\t*len = files[i].len;
\t\t\t*ctype = files[i].ctype;
\t\t\treturn 0;
\t\t}
\t}
\treturn -1;
}
")
file(WRITE "${OUT}.tmp" "${body}")
file(RENAME "${OUT}.tmp" "${OUT}")
