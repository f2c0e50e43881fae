# cmake -DINPUT=file -DOUTPUT=file.cpp -DNAMESPACE=ns -DFUNCTION=name -P EmbedText.cmake
# Writes a .cpp defining `std::string_view NAMESPACE::FUNCTION()` returning INPUT's text, so
# a document kept in the repository (the OpenAPI description) ships inside the binary.
file(READ "${INPUT}" content HEX)
string(LENGTH "${content}" hex_length)
math(EXPR byte_count "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${content}")
file(WRITE "${OUTPUT}"
  "// Generated from ${INPUT} by cmake/EmbedText.cmake. Do not edit.\n"
  "#include <string_view>\n"
  "namespace ${NAMESPACE} {\n"
  "namespace { constexpr unsigned char embedded_bytes[] = {${bytes} 0x00}; }\n"
  "std::string_view ${FUNCTION}() { return {reinterpret_cast<const char*>(embedded_bytes), ${byte_count}}; }\n"
  "}\n")
