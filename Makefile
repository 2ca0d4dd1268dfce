# Two commands set up everything on a fresh machine (Python 3.11 and Java 17 needed):
#   make run    - execute every chapter locally and print what each recorded
#   make test   - run the test suite (what CI runs)
# Both create .venv and install the project into it when missing or when pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHAPTERS ?=
PYTEST_ARGS ?=
# GGML_NATIVE=OFF: a -march=native llama.cpp build used AMX on a CPU that has it, and the
# sandbox refused AMX at the first token (segfault); the portable build (AVX2 on x86-64) does not.
LLAMA_BUILD_ENV := CMAKE_ARGS="-DGGML_NATIVE=OFF $(CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2

.PHONY: run test lab java clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is needed (found " + sys.version.split()[0] + "): install it or run make PYTHON=/path/to/python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@command -v cmake >/dev/null && { command -v c++ || command -v g++ || command -v clang++; } >/dev/null || { echo "The rag extra builds llama-cpp-python from source: install a C/C++ compiler and cmake first (Debian/Ubuntu: apt-get install build-essential cmake; macOS: xcode-select --install; brew install cmake)."; exit 1; }
	$(LLAMA_BUILD_ENV) $(PY) -m pip install --quiet --disable-pip-version-check -e '.[all]'
	@# pip reuses a wheel it built before whatever CMAKE_ARGS say, and a native build from
	@# another CPU dies at the first token: check one generation, rebuild from source if it fails.
	@$(PY) -m utils.rag.llm --self-test || { \
	  echo "llama-cpp-python failed its two-token check (a cached wheel built for another CPU?): rebuilding it from source"; \
	  $(PY) -m pip cache remove llama_cpp_python; \
	  $(LLAMA_BUILD_ENV) $(PY) -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
	    "llama-cpp-python==$$($(PY) -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')" && \
	  $(PY) -m utils.rag.llm --self-test; }
	@touch $(STAMP)

java: $(STAMP)
	@$(PY) -m utils.spark

run: $(STAMP) java
	$(PY) -m utils.chapters $(CHAPTERS)

test: $(STAMP) java
	$(PY) -m pytest $(PYTEST_ARGS)

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks/

clean:
	rm -rf .local
