# Deployment packages (docs/operations.md): dist/api/ and dist/monitor/ exactly as azd deploys them.
.PHONY: package
package: .venv/.installed ## Build dist/api and dist/monitor as they deploy (Linux x86-64, CPython 3.11 wheels); last line JSON sizes in MB [REUSE=1]
	$(PY) -m tools.package $(if $(REUSE),--reuse)

# Checkov pins many packages of its own: it lives in .venv-checkov, never in the shared .venv.
.venv-checkov/.installed: requirements-checkov.txt
	python3.11 -m venv .venv-checkov
	.venv-checkov/bin/pip install -q --disable-pip-version-check -r requirements-checkov.txt
	touch $@

.PHONY: checkov
checkov: .venv-checkov/.installed ## Checkov's Bicep checks over infra/ (every file must parse; design needs are skipped inline)
	BC_SKIP_MAPPING=TRUE .venv-checkov/bin/checkov -d infra --framework bicep --compact --quiet --skip-download
