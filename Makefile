# diffusiond: see README.md
SWIFT ?= swift
.PHONY: build test
build:
	$(SWIFT) build -c release
test:
	$(SWIFT) test -c release
