# Greenlight: `make demo` runs the whole story on 127.0.0.1, `make test` runs the tests.
# Both create .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# The editable install maps greenlight.* onto the repository's folders; setuptools warns
# about that on every install, which would flood a first `make demo`.
QUIET_BUILD = PYTHONWARNINGS=ignore::UserWarning

.PHONY: demo test test-exhaustive test-fast lint typecheck bench conformance clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(QUIET_BUILD) $(BIN)/python -m pip install --quiet -e '.[test,installer,collector,s3]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo.story

test: $(STAMP) lint typecheck
	tests/ensure_packages.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m 'not exhaustive'

# Every crash point of the transaction and the long property runs (thousands of lives of a
# machine, of the journal's recovery); CI runs it after `make test`.
test-exhaustive: $(STAMP)
	tests/ensure_packages.sh
	$(BIN)/python -m pytest -q -n 2 --dist load -m exhaustive

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow'

lint: $(STAMP)
	$(BIN)/ruff check .

# mypy reads modules by path; build/typecheck/greenlight/ links the repository's folders
# under their installed names.
typecheck: $(STAMP)
	mkdir -p build/typecheck/greenlight
	for part in channels release updater; do \
	  ln -sfn ../../../$$part build/typecheck/greenlight/$$part; done
	$(BIN)/mypy -p greenlight.channels -p greenlight.updater -p greenlight.release

bench: $(STAMP)
	$(QUIET_BUILD) $(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run

# The public tuf-conformance suite against greenlight-conformance-client. The suite is not on
# PyPI: TUF_CONFORMANCE names a checkout of theupdateframework/tuf-conformance. It runs in a
# virtual environment of its own (it pins its own python-tuf for the repository side) and
# needs faketime (Debian's package) for its expiry tests.
conformance: $(STAMP)
	@test -n "$(TUF_CONFORMANCE)" || { echo "set TUF_CONFORMANCE=<path to a tuf-conformance checkout>"; exit 2; }
	command -v faketime >/dev/null || apt-get install -y -q faketime
	test -x $(TUF_CONFORMANCE)/.venv/bin/python || $(PYTHON) -m venv $(TUF_CONFORMANCE)/.venv
	$(TUF_CONFORMANCE)/.venv/bin/python -m pip install --quiet -e $(TUF_CONFORMANCE)
	cd $(TUF_CONFORMANCE) && .venv/bin/python -m pytest tuf_conformance -q -p no:cacheprovider \
	  --entrypoint $(abspath $(BIN))/greenlight-conformance-client

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache demo-work
