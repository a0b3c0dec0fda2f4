/* alloc_count.c -- test builds only (TALLY_SANITIZE): counts every heap allocation of the
 * process into a file the tests read, so that they can tell how many allocations a request
 * costs. Off unless TALLY_ALLOC_COUNT_FILE names the file. Uses the sanitizer runtime's
 * allocation hook, which runs on every thread for malloc, calloc, realloc and friends. */
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tally/log.h"

/* Declared by the sanitizer runtime (sanitizer/allocator_interface.h, which gcc 12 does not
 * ship). */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
void tally_alloc_count_start(void);

static _Atomic uint64_t *alloc_count;

static void on_malloc(const volatile void *p, size_t size)
{
    (void)p;
    (void)size;
    atomic_fetch_add_explicit(alloc_count, 1, memory_order_relaxed);
}

static void on_free(const volatile void *p)
{
    (void)p;
}

void tally_alloc_count_start(void)
{
    const char *path = getenv("TALLY_ALLOC_COUNT_FILE");
    void *m;
    int fd;

    if (path == NULL || path[0] == '\0')
        return;
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, sizeof(uint64_t)) < 0) {
        log_error("cannot count allocations in '%s'", path);
        exit(1);
    }
    m = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        log_error("cannot map '%s'", path);
        exit(1);
    }
    alloc_count = m;
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}
