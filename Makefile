# Quick start: make demo && make test (each sets .venv up on first use; CI: make setup lint test)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp is newer than pyproject.toml once set-up finished: a second `make test` does not reinstall.
STAMP := $(VENV)/.vitdeploy-setup
DEMO_DIR ?= artifacts/demo

.PHONY: setup demo lint test bench plugins gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: takes the local CPU build instead of a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	# tensorrt-rtx: TensorRT for RTX, whose builder runs without a GPU, so every test run builds engines.
	$(BIN)/python -m pip install -q -e '.[serve,plot,test,tensorrt-rtx]'
	@$(BIN)/vitdeploy --version
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vitdeploy export efficientvit_m0 -o $(DEMO_DIR)/efficientvit_m0.onnx
	$(BIN)/vitdeploy info $(DEMO_DIR)/efficientvit_m0.onnx
	$(BIN)/vitdeploy bench $(DEMO_DIR)/efficientvit_m0.onnx --backend torch ort --batch 16 --threads 1 --iters 20 --json $(DEMO_DIR)/bench.json
	$(BIN)/vitdeploy build $(DEMO_DIR)/efficientvit_m0.onnx -o $(DEMO_DIR)/efficientvit_m0.engine --tensorrt rtx --compute-capability 8.6 8.9 12.0
	$(BIN)/vitdeploy info $(DEMO_DIR)/efficientvit_m0.engine
	@echo "demo artifacts in $(DEMO_DIR)/ (the .engine runs on an RTX GPU: vitdeploy validate it there)"

lint: $(STAMP)
	$(BIN)/ruff check .

# Two workers (this machine's 2 cores), one test file per worker so module fixtures (exports) are made once.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 tests

# CPU benchmarks behind README's tables (~10 min on 2 cores); results in benchmarks/results/
bench: $(STAMP)
	$(BIN)/python benchmarks/efficientvit_cpu.py
	$(BIN)/python benchmarks/sparsevit_cpu.py
	$(BIN)/python benchmarks/sparsevit_parity.py
	$(BIN)/python benchmarks/serve_load.py

plugins: $(STAMP)
	$(BIN)/vitdeploy plugins build

# Everything that needs a GPU (tier 2, tier 3 where TensorRT imports, kernel bandwidth) in <= 8 min:
#   make gpu-check OUT=dir   -> dir/gpu_check.json + dir/gpu_check.md
OUT ?= artifacts/gpu-check
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	$(GPU_PY) benchmarks/gpu_check.py --out $(OUT)

clean:
	rm -rf build artifacts .pytest_cache
