# Sub-context programs: every directory apps/NAME/sub/ becomes out/sub/NAME.elf, linked
# with elisa/sub.ld (no guest runtime: the sub context has no console, no IDT, no ports
# to the host; it computes and returns). Included from ../Makefile.
SUB_DIRS     := $(patsubst %/,%,$(wildcard apps/*/sub/))
SUB_PROGRAMS := $(patsubst apps/%/sub,$(OUT)/sub/%.elf,$(SUB_DIRS))
SUB_LDFLAGS  := -nostdlib -static -no-pie -Wl,--build-id=none -Wl,-T,elisa/sub.ld -Wl,-z,noexecstack \
                -Wl,--no-warn-rwx-segments

all: $(SUB_PROGRAMS)

$(OUT)/sub/%.elf: $$(wildcard apps/%/sub/*.c apps/%/sub/*.S) elisa/sub.ld $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SUB_LDFLAGS) $(filter %.c %.S,$^) -o $@
