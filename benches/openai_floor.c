/* The floor for `cargo bench --bench openai`'s slow-server case: about the least CPU any client
 * can spend on a stream. One thread per connection, a blocking recv() per arrival (no event
 * loop, no HTTP or JSON parsing: it only counts "data:" lines and finds the end of each
 * response), each thread sending its next request when the last one ended.
 *
 *   cc -O2 -pthread benches/openai_floor.c -o FLOOR && FLOOR PORT PATH CONCURRENCY REQUESTS
 *
 * Prints one JSON line, as benches/openai_client.py does: requests, seconds, requests/s, events,
 * CPU seconds. The server is on 127.0.0.1 and answers with chunked transfer encoding. */
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int port;
static char req[1024];
static atomic_long left, events;

static void *client(void *arg) {
    (void)arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (void *)&a, sizeof a)) { perror("connect"); exit(1); }
    char buf[65536 + 8];
    while (atomic_fetch_sub(&left, 1) > 0) {
        if (write(fd, req, strlen(req)) < 0) { perror("write"); exit(1); }
        /* The last 7 bytes of the previous read lead the next, so a marker split between two
         * reads is still found once. */
        size_t carry = 0;
        long n_ev = 0;
        for (;;) {
            ssize_t k = recv(fd, buf + carry, 65536, 0);
            if (k <= 0) { fprintf(stderr, "the server closed the connection\n"); exit(1); }
            size_t len = carry + (size_t)k;
            for (size_t j = 0; j + 5 <= len; j++)
                if (j + 5 > carry && !memcmp(buf + j, "data:", 5)) n_ev++;
            if (len >= 5 && !memcmp(buf + len - 5, "0\r\n\r\n", 5)) break;
            carry = len < 7 ? len : 7;
            memmove(buf, buf + len - carry, carry);
        }
        atomic_fetch_add(&events, n_ev);
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s PORT PATH CONCURRENCY REQUESTS\n", argv[0]); return 2; }
    port = atoi(argv[1]);
    int c = atoi(argv[3]);
    long n = atol(argv[4]);
    const char *body = "{\"model\":\"mock\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],"
                       "\"max_tokens\":16,\"stream\":true}";
    snprintf(req, sizeof req,
             "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             argv[2], port, strlen(body), body);
    atomic_store(&left, n);
    struct timespec t0, t1;
    struct rusage r0, r1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    getrusage(RUSAGE_SELF, &r0);
    pthread_t *th = calloc((size_t)c, sizeof *th);
    for (int i = 0; i < c; i++) pthread_create(&th[i], NULL, client, NULL);
    for (int i = 0; i < c; i++) pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_SELF, &r1);
    double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
                 (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    printf("{\"requests\": %ld, \"seconds\": %f, \"rps\": %f, \"events\": %ld, \"cpu_s\": %f}\n", n, secs,
           n / secs, atomic_load(&events), cpu);
    return 0;
}
