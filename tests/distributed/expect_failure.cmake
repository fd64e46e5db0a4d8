# Runs COMMAND (a list) with a time limit; passes when it ends with a non-zero status and its
# output (stdout and stderr) matches REGEX, i.e. the job stopped with the expected message
# instead of hanging or succeeding.
#   cmake -DCOMMAND="mpiexec -n 2 ..." -DREGEX=... -P expect_failure.cmake
separate_arguments(command UNIX_COMMAND "${COMMAND}")
execute_process(COMMAND ${command} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
message(STATUS "exit status: ${rc}\n--- output ---\n${out}\n--- errors ---\n${err}")
if(rc STREQUAL "0")
  message(FATAL_ERROR "expected a failure, the job succeeded")
endif()
if(rc MATCHES "timeout")
  message(FATAL_ERROR "the job did not end within 60 s")
endif()
if(NOT "${out}${err}" MATCHES "${REGEX}")
  message(FATAL_ERROR "the output does not match: ${REGEX}")
endif()
