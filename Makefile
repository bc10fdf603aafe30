# Convenience wrapper around Meson; the scripts do the real work.
.PHONY: all deps build check demo bench format clean
all: build
deps:
	bash scripts/install-deps.sh
build:
	bash scripts/build.sh
check:
	bash scripts/check.sh
demo:
	bash scripts/demo.sh
format:
	clang-format -i $$(git ls-files '*.c' '*.h')
clean:
	rm -rf build
