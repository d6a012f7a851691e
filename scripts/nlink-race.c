/* A FUSE kernel race around UNLINK, shown on any FUSE filesystem (see scripts/nlink-race).
 *
 * A file keeps a name "a" while one thread links it as "b" and unlinks "b" again, over and
 * over; other threads ask for its attributes (statx with AT_STATX_FORCE_SYNC: a GETATTR each
 * time). After an UNLINK the kernel lowers the inode's cached link count itself, in the
 * unlinking task, once it wakes; a GETATTR answered after the unlink but stored before that
 * drop leaves the count at 0, and link(2) then refuses "a" with ENOENT without asking the
 * filesystem. Counts those refusals, and how many of them saw a cached count of 0
 * (AT_STATX_DONT_SYNC), then refreshes the count and goes on.
 *
 * With "dir" as the fourth argument it shows the other side: a directory's link count that
 * goes stale. One thread makes and removes a subdirectory "d/x" over and over and stats "d"
 * after each step; others ask for "d"'s attributes. The kernel marks "d"'s attributes stale
 * after the mkdir or rmdir but does not otherwise order them against replies already on
 * their way: a reply made before the change and stored after that mark leaves the old count
 * cached. Counts the stats that show a count other than 3 after the mkdir or 2 after the
 * rmdir (as "refused"; "cached0" is then 0).
 *
 * usage: nlink-race DIR [SECONDS] [STAT_THREADS] [dir]     prints one line of counts */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char a[4096], b[4096], d[4096], x[4096];
static volatile int stop;
static pthread_t stat_threads[16];
static int nstat;

/* Ask for the attributes of the path `arg` (a GETATTR each time) until `stop`. */
static void *stat_loop(void *arg) {
  const char *path = arg;
  struct statx sx;
  while (!stop)
    statx(AT_FDCWD, path, AT_STATX_FORCE_SYNC, STATX_NLINK, &sx);
  return NULL;
}

static void start_stats(const char *path, int threads) {
  nstat = threads;
  for (int i = 0; i < nstat; i++) pthread_create(&stat_threads[i], NULL, stat_loop, (void *)path);
}

static void stop_stats(void) {
  stop = 1;
  for (int i = 0; i < nstat; i++) pthread_join(stat_threads[i], NULL);
}

static int dir_race(const char *dir, int secs, int threads) {
  snprintf(d, sizeof d, "%s/d", dir);
  snprintf(x, sizeof x, "%s/d/x", dir);
  rmdir(x);
  if (mkdir(d, 0755) != 0 && errno != EEXIST) {
    perror(d);
    return 1;
  }
  start_stats(d, threads);
  time_t end = time(NULL) + secs;
  long rounds = 0, stale = 0;
  int rc = 0;
  struct stat st;
  while (time(NULL) < end) {
    if (mkdir(x, 0755) != 0) {
      perror("mkdir");
      rc = 1;
      break;
    }
    if (stat(d, &st) == 0 && st.st_nlink != 3) stale++;
    if (rmdir(x) != 0) {
      perror("rmdir");
      rc = 1;
      break;
    }
    if (stat(d, &st) == 0 && st.st_nlink != 2) stale++;
    rounds++;
  }
  stop_stats();
  rmdir(d);
  printf("rounds %ld refused %ld cached0 0\n", rounds, stale);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DIR [SECONDS] [STAT_THREADS]\n", argv[0]);
    return 2;
  }
  int secs = argc > 2 ? atoi(argv[2]) : 5;
  int threads = argc > 3 ? atoi(argv[3]) : 1;
  if (threads < 1 || threads > 16) threads = 1;
  if (argc > 4 && strcmp(argv[4], "dir") == 0) return dir_race(argv[1], secs, threads);
  snprintf(a, sizeof a, "%s/a", argv[1]);
  snprintf(b, sizeof b, "%s/b", argv[1]);
  unlink(b);
  int fd = open(a, O_CREAT | O_WRONLY, 0644);
  if (fd < 0) {
    perror(a);
    return 1;
  }
  close(fd);
  start_stats(a, threads);
  time_t end = time(NULL) + secs;
  long rounds = 0, refused = 0, zero = 0;
  int rc = 0;
  while (time(NULL) < end) {
    if (link(a, b) != 0) {
      if (errno != ENOENT) {
        perror("link");
        rc = 1;
        break;
      }
      refused++;
      struct statx sx;
      if (statx(AT_FDCWD, a, AT_STATX_DONT_SYNC, STATX_NLINK, &sx) == 0 && sx.stx_nlink == 0)
        zero++;
      statx(AT_FDCWD, a, AT_STATX_FORCE_SYNC, STATX_NLINK, &sx);
      continue;
    }
    if (unlink(b) != 0) {
      perror("unlink");
      rc = 1;
      break;
    }
    rounds++;
  }
  stop_stats();
  unlink(a);
  printf("rounds %ld refused %ld cached0 %ld\n", rounds, refused, zero);
  return rc;
}
