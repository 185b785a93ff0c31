# Offline deployment rehearsal (docs/operations.md "Rehearsal"): both packages, Bicep-derived settings, the story.
.PHONY: rehearse
rehearse: .venv/.installed node_modules/.installed ## Build both packages, run them with the settings Bicep gives each app on the emulators, run the whole story; last line JSON (packages, steps)
	$(PY) -m tools.rehearse $(if $(WORKDIR),--workdir $(WORKDIR))
