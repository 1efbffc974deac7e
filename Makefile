# EchoMask for Blender — the two set-up commands of the README, plus a few helpers.
#   make demo   creates .venv and turns the bundled example speech into an animated SMPL-X rig (.npz/.blend/.fbx)
#   make test   creates the test environments (Blender 5.0 with torch; 4.2 LTS, 4.5 LTS, 5.2 LTS, 5.3 as Python
#               modules) and runs the tests
# Environments are rebuilt when their requirements file changes. Python 3.11 (Blender 4.2–5.0) and Python 3.13
# (Blender 5.1 and later) are required; PYTHON313 is found on PATH or in pyenv.
PYTHON ?= python3.11
PYTHON313 ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
                 $$p -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && { echo $$p; break; }; done)
PIP_FLAGS ?= -q --disable-pip-version-check

BPY_ENVS = .venv-bpy42 .venv-bpy45 .venv-bpy52 .venv-bpy53

.PHONY: demo test extension bench clean-envs

.venv/.ready: requirements/dev.txt requirements/core.txt
	$(PYTHON) -m venv .venv
	.venv/bin/pip install $(PIP_FLAGS) -r requirements/dev.txt
	touch $@

# Blender-only environments: bpy, its own dependencies and pytest, nothing else (as Blender's Python).
.venv-bpy4%/.ready: requirements/bpy4%.txt
	rm -rf $(@D) && $(PYTHON) -m venv $(@D)
	$(@D)/bin/pip install $(PIP_FLAGS) --only-binary=:all: -r $<
	touch $@

.venv-bpy5%/.ready: requirements/bpy5%.txt
	@test -n "$(PYTHON313)" || { echo "error: Blender 5.1+ needs Python 3.13 (set PYTHON313=/path/to/python3.13)"; exit 2; }
	rm -rf $(@D) && $(PYTHON313) -m venv $(@D)
	$(@D)/bin/pip install $(PIP_FLAGS) --only-binary=:all: -r $<
	touch $@

demo: .venv/.ready
	.venv/bin/python -m core generate examples/example_speech.wav -o out/demo

test: .venv/.ready $(addsuffix /.ready,$(BPY_ENVS))
	bash tools/run_tests.sh

extension: .venv/.ready
	.venv/bin/python tools/build_extension.py

bench: .venv/.ready
	for b in bench/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done

clean-envs:
	rm -rf .venv $(BPY_ENVS)
