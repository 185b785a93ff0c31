# Fine-tuning (docs/training.md): python -m model.train in the model venv. DATA is shared with the model and
# drift targets (a folder or a CSV here); OUT with `make eval` (a report file there), so its default is applied
# per target.
TASK ?= imagenet
NAME ?=
BASE ?= model/artifacts/current.card.json
TRAIN_ARGS ?=

.PHONY: train
train: model/.venv/.installed ## Fine-tune: make train DATA=folder|csv [TASK=imagenet|custom NAME= BASE=card OUT=model/artifacts TRAIN_ARGS=]
	@if [ -z "$(DATA)" ]; then echo "usage: make train DATA=<class folder|path,label CSV> [TASK=custom NAME=plants]"; exit 2; fi
	PYTHONPATH=. $(MODEL_PY) -m model.train --data $(DATA) --task $(TASK) --base $(BASE) \
		--out $(or $(OUT),model/artifacts) $(if $(NAME),--name $(NAME)) $(TRAIN_ARGS)

.PHONY: test-train
test-train: model/.venv/.installed ## Only the training tests (tests/model/test_train.py; make test-model runs them too)
	PYTHONPATH=. $(MODEL_PY) -m pytest tests/model/test_train.py -m model -p no:cacheprovider $(PYTEST_ARGS)
