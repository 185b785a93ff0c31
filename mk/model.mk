# The offline model pipeline (docs/model.md): export and test in the torch venv, card/quantize/eval in the app venv.
ARCH ?= resnet50
WEIGHTS ?= auto
# MODEL is shared with `make up` (empty default there), so the default card is applied per target.
DEFAULT_MODEL = model/artifacts/current.card.json
DATA ?= ../shared/imagenet-sample
CALIB ?= ../shared/imagenet-sample
CALIB_N ?= 100
EVAL ?=
OUT ?=

model/.venv/.installed: model/requirements.txt
	python3.11 -m venv model/.venv
	model/.venv/bin/pip install -q --disable-pip-version-check -r model/requirements.txt
	touch $@

.PHONY: model-venv
model-venv: model/.venv/.installed ## Create the model venv (torch, torchvision; ~5.6 GB)

.PHONY: model
model: model/.venv/.installed ## Export ARCH (default resnet50, WEIGHTS=auto: EfficientNet-Lite0 offline) to model/artifacts
	$(MODEL_PY) -m model.export --arch $(ARCH) --weights $(WEIGHTS) --out model/artifacts

.PHONY: model-random
model-random: model/.venv/.installed ## Export ARCH=resnet50 with random weights (benchmarks only; not made current)
	$(MODEL_PY) -m model.export --arch $(ARCH) --weights random --out model/artifacts

.PHONY: imagenet-labels
imagenet-labels: model/.venv/.installed ## Regenerate shared_code/imagenet_labels.txt from torchvision's metadata
	$(MODEL_PY) -m model.export --write-labels

.PHONY: model-card
model-card: .venv/.installed ## Write a card beside an ImageNet ONNX: make model-card MODEL=path.onnx
	$(PY) -m model.card $(MODEL)

.PHONY: quantize
quantize: .venv/.installed ## int8 static QDQ: make quantize MODEL=card|onnx CALIB=dir [CALIB_N=100 EVAL=dir]
	$(PY) -m model.quantize $(or $(MODEL),$(DEFAULT_MODEL)) --calib $(CALIB) --n $(CALIB_N) $(if $(EVAL),--eval $(EVAL))

