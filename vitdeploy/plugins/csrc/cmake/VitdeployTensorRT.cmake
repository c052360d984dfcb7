# Locate TensorRT headers and libraries for vitdeploy's plugin library and C++ runner.
#
# Inputs (cache variables or environment variables of the same name), in order of precedence:
#   TensorRT_ROOT          an unpacked TensorRT tar/zip or install prefix: include/ and lib/ (or lib64/)
#   TensorRT_INCLUDE_DIR   directory holding NvInfer.h (pip wheels ship no headers: point this at the
#                          include/ of the TensorRT tarball or of github.com/NVIDIA/TensorRT at the same version)
#   TensorRT_LIB_DIR       directory holding libnvinfer.so[.N]
#   VITDEPLOY_TRT_INCLUDE  environment alias for TensorRT_INCLUDE_DIR
#   a pip-installed `tensorrt` (tensorrt_libs / tensorrt_cuXX_libs package), found with VITDEPLOY_PYTHON
#   system locations (/usr/include/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu for the .deb packages)
#
# Outputs:
#   TensorRT_HEADERS_FOUND, TensorRT_INCLUDE_DIR, TensorRT_VERSION (from NvInferVersion.h)
#   TensorRT_LIBS_FOUND, TensorRT_nvinfer_LIBRARY, TensorRT_LIB_DIR

foreach(_var TensorRT_ROOT TensorRT_INCLUDE_DIR TensorRT_LIB_DIR)
  if(NOT ${_var} AND DEFINED ENV{${_var}})
    set(${_var} "$ENV{${_var}}")
  endif()
endforeach()
if(NOT TensorRT_INCLUDE_DIR AND DEFINED ENV{VITDEPLOY_TRT_INCLUDE})
  set(TensorRT_INCLUDE_DIR "$ENV{VITDEPLOY_TRT_INCLUDE}")
endif()

# Library directory of a pip-installed TensorRT (its wheels put libnvinfer.so.N in tensorrt_libs/).
set(_vitdeploy_pip_trt_dir "")
if(NOT VITDEPLOY_PYTHON)
  find_program(VITDEPLOY_PYTHON NAMES python3 python)
endif()
if(VITDEPLOY_PYTHON)
  execute_process(
    COMMAND "${VITDEPLOY_PYTHON}" -c
      "import importlib.util as u, os\nfor n in ('tensorrt_libs','tensorrt_cu13_libs','tensorrt_cu12_libs'):\n    s = u.find_spec(n)\n    if s and s.submodule_search_locations:\n        print(list(s.submodule_search_locations)[0]); break"
    OUTPUT_VARIABLE _vitdeploy_pip_trt_dir
    OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_QUIET)
endif()

set(_trt_include_hints "")
set(_trt_lib_hints "")
if(TensorRT_INCLUDE_DIR)
  list(APPEND _trt_include_hints "${TensorRT_INCLUDE_DIR}")
endif()
if(TensorRT_LIB_DIR)
  list(APPEND _trt_lib_hints "${TensorRT_LIB_DIR}")
endif()
if(TensorRT_ROOT)
  list(APPEND _trt_include_hints "${TensorRT_ROOT}/include")
  list(APPEND _trt_lib_hints "${TensorRT_ROOT}/lib" "${TensorRT_ROOT}/lib64" "${TensorRT_ROOT}/targets/x86_64-linux/lib")
endif()
if(_vitdeploy_pip_trt_dir)
  list(APPEND _trt_lib_hints "${_vitdeploy_pip_trt_dir}")
endif()

unset(TensorRT_INCLUDE_DIR CACHE)
find_path(TensorRT_INCLUDE_DIR NvInfer.h
  HINTS ${_trt_include_hints}
  PATHS /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu /usr/local/TensorRT/include /opt/tensorrt/include)

set(TensorRT_HEADERS_FOUND FALSE)
set(TensorRT_VERSION "")
if(TensorRT_INCLUDE_DIR AND EXISTS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h")
  set(TensorRT_HEADERS_FOUND TRUE)
  file(READ "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _trt_version_header)
  foreach(_part MAJOR MINOR PATCH BUILD)
    # TensorRT 10.x: #define NV_TENSORRT_MAJOR 10; 11.x: #define TRT_MAJOR_ENTERPRISE 11 behind NV_TENSORRT_MAJOR
    string(REGEX MATCH "#define (NV_TENSORRT|TRT)_${_part}(_ENTERPRISE)? +([0-9]+)" _m "${_trt_version_header}")
    set(_trt_${_part} "${CMAKE_MATCH_3}")
  endforeach()
  set(TensorRT_VERSION "${_trt_MAJOR}.${_trt_MINOR}.${_trt_PATCH}.${_trt_BUILD}")
endif()

# Only libnvinfer.so.<the headers' major>: TensorRT's plugin ABI holds within a major only (11.x gave
# ILoggerFinder a base class, so a plugin compiled against 11.x headers calls the wrong vtable slot through a
# 10.x library). Pip wheels ship only versioned names, and an unversioned libnvinfer.so says nothing about its
# major, so the versioned name is the one we trust.
unset(TensorRT_nvinfer_LIBRARY CACHE)
set(_trt_search_paths /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/local/TensorRT/lib /opt/tensorrt/lib)
if(_trt_MAJOR)
  find_library(TensorRT_nvinfer_LIBRARY NAMES "libnvinfer.so.${_trt_MAJOR}"
    HINTS ${_trt_lib_hints} PATHS ${_trt_search_paths})
  if(NOT TensorRT_nvinfer_LIBRARY)
    unset(_trt_other_nvinfer CACHE)
    find_library(_trt_other_nvinfer NAMES nvinfer libnvinfer.so.12 libnvinfer.so.11 libnvinfer.so.10 libnvinfer.so.9
      HINTS ${_trt_lib_hints} PATHS ${_trt_search_paths})
    if(_trt_other_nvinfer)
      get_filename_component(_trt_other_real "${_trt_other_nvinfer}" REALPATH)
      message(FATAL_ERROR "vitdeploy: TensorRT headers and libnvinfer differ: the TensorRT ${TensorRT_VERSION} headers "
        "in ${TensorRT_INCLUDE_DIR} need libnvinfer.so.${_trt_MAJOR}, found only ${_trt_other_real}; point "
        "TensorRT_LIB_DIR (or --tensorrt-root) at TensorRT ${_trt_MAJOR}.x, or TensorRT_INCLUDE_DIR at the headers "
        "of the library's version")
    endif()
  endif()
endif()

set(TensorRT_LIBS_FOUND FALSE)
if(TensorRT_nvinfer_LIBRARY)
  set(TensorRT_LIBS_FOUND TRUE)
  get_filename_component(TensorRT_LIB_DIR "${TensorRT_nvinfer_LIBRARY}" DIRECTORY)
endif()
