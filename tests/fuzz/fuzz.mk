# tests/fuzz/fuzz.mk - libFuzzer harnesses for every reader of untrusted
# files (docs/TESTING.md, "Fuzzing"). The Makefile includes it; it also
# runs alone: make -f tests/fuzz/fuzz.mk fuzz-smoke
#
#   make fuzz-build   bin/fuzz/fuzz_NAME (clang, libFuzzer + ASan + UBSan)
#                     and bin/fuzz/make_seeds (the normal compiler)
#   make fuzz         each harness for FUZZ_SECONDS (default 60), one at a
#                     time, on the corpus out/fuzz/NAME seeded from
#                     out/fuzz/seeds/NAME; stops at the first crash and
#                     prints the reproducer
#   make fuzz-smoke   the same for FUZZ_SMOKE_SECONDS (default 3) each;
#                     skipped, with the reason, where clang cannot link
#                     -fsanitize=fuzzer
#   make fuzz-crashes every input the fuzzers once crashed on
#                     (tests/fuzz/crashes/HARNESS-WHAT), through its harness:
#                     the bugs stay fixed
#   make fuzz-ci      what .ci/run runs: fuzz-crashes, then each harness for
#                     FUZZ_CI_SECONDS (default 30); skipped like fuzz-smoke
#
# FUZZ_ARGS adds libFuzzer flags (e.g. FUZZ_ARGS=-jobs=2); FUZZ_ONLY="shard
# delta" runs some harnesses only. FUZZ_KNOWN=1 lets the run go on past the
# library bugs already reported and not yet fixed (their reproducers are in
# tests/fuzz/crashes/): the UBSan reports listed in tests/fuzz/known.supp,
# and error messages of several lines (FUZZ_ALLOW_MULTILINE=1). fuzz-smoke
# sets it, so that `make test` looks for new bugs only.

FUZZ_CC ?= clang
CC ?= cc
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_OUT ?= out/fuzz
FUZZ_ARGS ?=
FUZZ_KNOWN ?= 0
FUZZ_STD = -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror
# float-cast-overflow is recoverable only so that a known report can be
# suppressed: halt_on_error=1 still stops at every other one.
FUZZ_SAN = -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined,float-cast-overflow \
           -fno-sanitize-recover=all -fsanitize-recover=float-cast-overflow
FUZZ_ENV = UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1$(if $(filter 1,$(FUZZ_KNOWN)),:suppressions=$(abspath \
           tests/fuzz/known.supp) FUZZ_ALLOW_MULTILINE=1)
FUZZ_NAMES = safetensors checkpoint delta client_state server_state tokenizer_vocab tokenizer_merges shard
FUZZ_ONLY ?= $(FUZZ_NAMES)
FUZZ_BINS = $(FUZZ_NAMES:%=bin/fuzz/fuzz_%)
FUZZ_DEPS = photon.h photon_bpe.h tests/fuzz/fuzz_common.h tests/fuzz/fuzz.mk

.PHONY: fuzz-build fuzz fuzz-smoke fuzz-crashes fuzz-ci

# $(call fuzz_if_libfuzzer,TARGET,COMMAND): COMMAND where clang links
# -fsanitize=fuzzer, else one line saying why TARGET is skipped.
define fuzz_if_libfuzzer
	@printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
	    >/tmp/photon-fuzz-probe-$$$$.c; \
	if ! $(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o /tmp/photon-fuzz-probe-$$$$ /tmp/photon-fuzz-probe-$$$$.c \
	        >/dev/null 2>&1; then \
	    rm -f /tmp/photon-fuzz-probe-$$$$ /tmp/photon-fuzz-probe-$$$$.c; \
	    echo "$(1): skipped: $(FUZZ_CC) -fsanitize=fuzzer does not link here (no clang with libFuzzer)"; \
	    exit 0; \
	fi; \
	rm -f /tmp/photon-fuzz-probe-$$$$ /tmp/photon-fuzz-probe-$$$$.c; \
	$(2)
endef

fuzz-build: $(FUZZ_BINS) bin/fuzz/make_seeds

bin/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p bin/fuzz
	$(FUZZ_CC) $(FUZZ_STD) $(FUZZ_SAN) -o $@ $< -lm -pthread

bin/fuzz/make_seeds: tests/fuzz/make_seeds.c $(FUZZ_DEPS)
	@mkdir -p bin/fuzz
	$(CC) $(FUZZ_STD) -O2 -o $@ $< -lm -pthread

# $(call fuzz_run,SECONDS): fresh seeds, then each harness in turn. A crash,
# leak, timeout (-timeout=10) or out-of-memory stops the loop; libFuzzer's
# log is in out/fuzz/NAME.log, the input that did it in out/fuzz/artifacts/.
define fuzz_run
	rm -rf $(FUZZ_OUT)/seeds
	mkdir -p $(FUZZ_OUT)/artifacts
	./bin/fuzz/make_seeds $(FUZZ_OUT)/seeds
	@for n in $(FUZZ_ONLY); do \
	    mkdir -p $(FUZZ_OUT)/$$n; \
	    echo "fuzz: $$n for $(1) s (log: $(FUZZ_OUT)/$$n.log)"; \
	    if ! $(FUZZ_ENV) ./bin/fuzz/fuzz_$$n -max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	            -artifact_prefix=$(FUZZ_OUT)/artifacts/$$n- $(FUZZ_ARGS) \
	            $(FUZZ_OUT)/$$n $(FUZZ_OUT)/seeds/$$n >$(FUZZ_OUT)/$$n.log 2>&1; then \
	        grep -a -E '^==[0-9]+==ERROR|SUMMARY|runtime error|^fuzz: ' $(FUZZ_OUT)/$$n.log | head -5; \
	        unit=`sed -n 's/.*Test unit written to //p' $(FUZZ_OUT)/$$n.log | tail -1`; \
	        echo "fuzz: $$n FAILED; reproduce with: $(FUZZ_ENV) ./bin/fuzz/fuzz_$$n $${unit:-(no unit written; see the log)}"; \
	        exit 1; \
	    fi; \
	    grep -a -E '^#[0-9]+[[:space:]]+DONE' $(FUZZ_OUT)/$$n.log | tail -1; \
	done
endef

fuzz: fuzz-build
	$(call fuzz_run,$(FUZZ_SECONDS))

fuzz-smoke:
	$(call fuzz_if_libfuzzer,fuzz-smoke,$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) fuzz \
	    FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) FUZZ_KNOWN=1)

# Each reproducer, named HARNESS-WHAT, through its harness once.
fuzz-crashes: fuzz-build
	@for c in tests/fuzz/crashes/*; do \
	    [ -f "$$c" ] || continue; n=`basename $$c`; n=$${n%%-*}; \
	    case "$$n" in tokenizer) n=tokenizer_vocab ;; client) n=client_state ;; server) n=server_state ;; esac; \
	    if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ./bin/fuzz/fuzz_$$n "$$c" >/tmp/photon-fuzz-crash.log 2>&1; then \
	        grep -a -E 'ERROR|SUMMARY|runtime error|^fuzz: ' /tmp/photon-fuzz-crash.log | head -5; \
	        echo "fuzz-crashes: $$c crashes fuzz_$$n again"; exit 1; \
	    fi; \
	    echo "fuzz-crashes: $$c: fixed (fuzz_$$n runs it clean)"; \
	done

FUZZ_CI_SECONDS ?= 30
fuzz-ci:
	$(call fuzz_if_libfuzzer,fuzz-ci,$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) fuzz-crashes && \
	    $(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) fuzz FUZZ_SECONDS=$(FUZZ_CI_SECONDS))
