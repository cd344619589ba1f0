# Writes the javac argument file listing SWIG's generated .java files (unknown
# until SWIG has run, so add_jar cannot list them at configure time).
file(GLOB generated "${GEN_DIR}/*.java")
list(SORT generated)
string(REPLACE ";" "\n" lines "${generated}")
file(WRITE "${ARGFILE}.tmp" "${lines}\n")
file(COPY_FILE "${ARGFILE}.tmp" "${ARGFILE}" ONLY_IF_DIFFERENT)
