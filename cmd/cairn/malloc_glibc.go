//go:build linux && cgo

package main

// #include <malloc.h>
// #include <stdlib.h>
//
// // Runs when the program is loaded, before the Go runtime starts its
// // threads: glibc fixes its arena limit when it makes the second arena,
// // so a mallopt from main would come too late.
// __attribute__((constructor)) static void cairn_tune_malloc(void) {
// #ifdef M_ARENA_MAX
// 	if (getenv("MALLOC_ARENA_MAX") == NULL) {
// 		mallopt(M_ARENA_MAX, 2);
// 	}
// #endif
// }
import "C"

// Pebble allocates its block cache and memtables with C malloc. With
// glibc's default of up to 8 arenas per core, memory freed by one thread
// stays in that thread's arena: a 1,000,000-key load with a 16 MiB block
// cache ended at 332 MiB of RSS with glibc's default (16 arenas on 2
// cores), 260 MiB with two (the cache's blocks are allocated and freed by
// whichever goroutine reads them).
// MALLOC_ARENA_MAX in the environment still wins. The constructor above
// does the work; this file only has to be linked in.
