# EchoMask for Blender — the two set-up commands of the README, plus a few helpers.
#   make demo   creates .venv and turns the bundled example speech into an animated SMPL-X rig (.npz/.blend/.fbx)
#   make test   creates the three test environments (Blender 5.0, 4.5 LTS, 4.2 LTS as Python modules) and runs the tests
# Environments are rebuilt when their requirements file changes. Python 3.11 is required (Blender 4.2–5.0).
PYTHON ?= python3.11
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: demo test test-core test-blender45 test-blender42 extension bench clean-envs

.venv/.ready: requirements/dev.txt requirements/core.txt
	$(PYTHON) -m venv .venv
	.venv/bin/pip install $(PIP_FLAGS) -r requirements/dev.txt
	touch $@

.venv-bpy45/.ready: requirements/bpy45.txt
	$(PYTHON) -m venv .venv-bpy45
	.venv-bpy45/bin/pip install $(PIP_FLAGS) -r requirements/bpy45.txt
	touch $@

.venv-bpy42/.ready: requirements/bpy42.txt
	$(PYTHON) -m venv .venv-bpy42
	.venv-bpy42/bin/pip install $(PIP_FLAGS) -r requirements/bpy42.txt
	touch $@

demo: .venv/.ready
	.venv/bin/python -m core generate examples/example_speech.wav -o out/demo

test: .venv/.ready .venv-bpy45/.ready .venv-bpy42/.ready
	bash tools/run_tests.sh

extension: .venv/.ready
	.venv/bin/python tools/build_extension.py

bench: .venv/.ready
	for b in bench/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done

clean-envs:
	rm -rf .venv .venv-bpy45 .venv-bpy42
