// fork() while other threads allocate: the child must never deadlock. Threads allocate
// and free (also across threads, and exit to abandon segments) while the main thread
// forks repeatedly; each child allocates, frees, starts a thread, and exits. Run under
// `timeout`: a deadlock shows as a timeout.
//
//   test_fork [forks]
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop = 0;
static void* volatile shared[256];

static void* churn(void* arg) {
  unsigned s = (unsigned)(size_t)arg;
  while (!stop) {
    for (int i = 0; i < 64; i++) {
      s = s * 1103515245u + 12345u;
      size_t n = 1 + (s >> 8) % 20000;
      void* p = malloc(n);
      memset(p, 1, n < 64 ? n : 64);
      void* old = __atomic_exchange_n(&shared[(s >> 3) % 256], p, __ATOMIC_ACQ_REL);
      free(old);
    }
  }
  return NULL;
}

static void* short_lived(void* arg) {
  (void)arg;
  void* p = malloc(1000);
  void* old = __atomic_exchange_n(&shared[7], p, __ATOMIC_ACQ_REL);
  free(old);
  return NULL;   // exits with blocks of its segment still live elsewhere: abandoned
}

static void* child_thread(void* arg) {
  (void)arg;
  for (int i = 0; i < 1000; i++) free(malloc(100 + i));
  return NULL;
}

int main(int argc, char** argv) {
  int forks = argc > 1 ? atoi(argv[1]) : 200;
  pthread_t t[3];
  for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn, (void*)(size_t)(i + 1));
  int bad = 0;
  for (int f = 0; f < forks; f++) {
    pthread_t s;
    pthread_create(&s, NULL, short_lived, NULL);
    pid_t pid = fork();
    if (pid == 0) {
      // child: only this thread exists; allocate, free blocks of the parent's threads,
      // start a thread, and exit
      for (int i = 0; i < 100; i++) free(malloc(10 + i * 100));
      void* p = __atomic_exchange_n(&shared[f % 256], NULL, __ATOMIC_ACQ_REL);
      free(p);
      pthread_t c;
      pthread_create(&c, NULL, child_thread, NULL);
      pthread_join(c, NULL);
      char* q = malloc(5 << 20);
      memset(q, 2, 5 << 20);
      free(q);
      _exit(0);
    }
    if (pid < 0) { perror("fork"); bad = 1; break; }
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "child %d failed: status %d\n", f, st); bad = 1; }
    pthread_join(s, NULL);
  }
  stop = 1;
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < 256; i++) free(shared[i]);
  printf("test_fork: %d forks, %s\n", forks, bad ? "FAILED" : "ok");
  return bad;
}
