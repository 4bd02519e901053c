# qimg - build with plain make. `make` gives the static binary ./qimg.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man/man1
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
STATIC ?= 1
SANITIZE ?= 0

CC ?= cc
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Wshadow -Wno-missing-field-initializers -pthread
CPPFLAGS += -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64
LIBS := -lpopt -lcrypto -lzstd -lz -lm -lpthread

ifeq ($(SANITIZE),1)
  CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -O1
  LDFLAGS += -fsanitize=address,undefined
  STATIC := 0
  BUILD := build-san
  BIN := build-san/qimg
else
  BUILD := build
  BIN := qimg
endif
ifeq ($(STATIC),1)
  # glibc's static-link warnings for libcrypto's unused dlopen/getaddrinfo
  # paths are not ours to fix; -w keeps the build output clean.
  LDFLAGS += -static -Wl,-w
endif

SRCS := $(sort $(wildcard src/*.c src/*/*.c))
OBJS := $(SRCS:src/%.c=$(BUILD)/%.o)
LIBOBJS := $(filter-out $(BUILD)/main.o,$(OBJS))
UNIT_SRCS := $(sort $(wildcard tests/unit/*.c))
UNITS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/unit/%)
# The fuzz targets as plain programs that replay saved inputs (tests/fuzz.bats).
UNITS += $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/*.c))
DEPS := $(OBJS:.o=.d)

all: $(BIN)

$(BIN): $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

# Engine unit-test drivers, linked against everything but main.o.
units: $(UNITS)

$(BUILD)/unit/%: tests/unit/%.c $(LIBOBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBOBJS) $(LIBS)

$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz_main.h $(LIBOBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DFUZZ_REPLAY $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBOBJS) $(LIBS)

$(BUILD)/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(DEPS)

# SANITIZE=1 runs the same suite on build-san/qimg (ASan, LSan, UBSan). Any
# report aborts the program (SIGABRT, exit 134), which no test accepts:
# by default both would exit 1 (UBSan would even carry on), as an
# ordinary error does.
check: $(BIN) units
	BUILD=$(BUILD) QIMG_BIN=$(CURDIR)/$(BIN) QIMG_SANITIZED=$(SANITIZE) \
	    ASAN_OPTIONS=$${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
	    LSAN_OPTIONS=$${LSAN_OPTIONS:-suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0} \
	    UBSAN_OPTIONS=$${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1} \
	    tests/run

bench: qimg
	scripts/bench

# libFuzzer targets under tests/fuzz, built with clang and the sanitizers;
# each runs FUZZ_SECONDS. Memory is bounded: an allocation past the limit
# is a finding, as is one input that takes longer than FUZZ_TIMEOUT.
FUZZ_SECONDS ?= 60
FUZZ_TIMEOUT ?= 20
FUZZ_OBJS := $(LIBOBJS:$(BUILD)/%.o=build-fuzz/obj/%.o)
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,build-fuzz/%,$(wildcard tests/fuzz/*.c))
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

build-fuzz/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) -std=gnu11 $(FUZZ_FLAGS) -MMD -MP -c -o $@ $<

-include $(FUZZ_OBJS:.o=.d)
.SECONDARY: $(FUZZ_OBJS)

build-fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz_main.h $(FUZZ_OBJS)
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) -std=gnu11 $(FUZZ_FLAGS) -o $@ $< $(FUZZ_OBJS) $(LIBS)

fuzz-build: $(FUZZ_TARGETS)

fuzz: $(FUZZ_TARGETS)
	[ -d tests/fuzz/seeds ] || tests/fuzz/make-seeds
	for t in $(FUZZ_TARGETS); do \
	    mkdir -p build-fuzz/corpus-$$(basename $$t); \
	    $$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512 -malloc_limit_mb=256 \
	        -timeout=$(FUZZ_TIMEOUT) -max_len=262144 \
	        -artifact_prefix=build-fuzz/ build-fuzz/corpus-$$(basename $$t) tests/fuzz/seeds || exit 1; \
	done

install: qimg
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 755 qimg $(DESTDIR)$(BINDIR)/qimg
	for m in man/*.1; do [ -e "$$m" ] && install -m 644 "$$m" $(DESTDIR)$(MANDIR)/ || true; done
	[ ! -e completions/qimg.bash ] || install -m 644 completions/qimg.bash $(DESTDIR)$(BASHCOMPDIR)/qimg
	[ ! -e completions/_qimg ] || install -m 644 completions/_qimg $(DESTDIR)$(ZSHCOMPDIR)/_qimg

clean:
	rm -rf build build-san build-fuzz qimg

.PHONY: all units fuzz fuzz-build check bench install clean
