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

.PHONY: run test lab java clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is needed (found " + sys.version.split()[0] + "): install it or run make PYTHON=/path/to/python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@command -v cmake >/dev/null && { command -v c++ || command -v g++ || command -v clang++; } >/dev/null || { echo "The rag extra builds llama-cpp-python from source: install a C/C++ compiler and cmake first (Debian/Ubuntu: apt-get install build-essential cmake; macOS: xcode-select --install; brew install cmake)."; exit 1; }
	@# GGML_NATIVE=OFF: a -march=native llama.cpp build used AMX on a CPU that has it, and the
	@# sandbox refused AMX at the first token (segfault); the portable build (AVX2 on x86-64) does not.
	CMAKE_ARGS="-DGGML_NATIVE=OFF $(CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install --quiet --disable-pip-version-check -e '.[all]'
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
