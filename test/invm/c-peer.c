/*
 * A C peer for the in-VM negotiation tests, written for this project: it moves the protocol's
 * u64 values with the same system calls the original libelisa uses (one write()/read() of a
 * uint64_t each, native byte order), so the bytes on the wire are what gcc's x86-64 ABI makes of
 * them, independently of our TypeScript codec.
 *   c-peer client PORT VCPU_ID GVA   connects, sends both, reads ONLY the ack (as the original
 *                                    client does), prints "ack=<hex>", then holds the connection
 *                                    until stdin closes
 *   c-peer server PORT HPA           accepts one guest, reads both, prints "vcpu=<hex> gva=<hex>",
 *                                    answers ack + HPA, then reads until the guest closes
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(2); }

static void put(int fd, uint64_t v) { if (write(fd, &v, sizeof(v)) != sizeof(v)) die("write"); }

static uint64_t get(int fd) {
  uint64_t v; size_t got = 0;
  while (got < sizeof(v)) {
    ssize_t n = read(fd, (char *)&v + got, sizeof(v) - got);
    if (n <= 0) die("read");
    got += (size_t)n;
  }
  return v;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: c-peer client PORT VCPU GVA | server PORT HPA\n"); return 2; }
  struct sockaddr_in sin; memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET; sin.sin_port = htons((uint16_t)atoi(argv[2]));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (fd < 0) die("socket");
  if (strcmp(argv[1], "client") == 0 && argc == 5) {
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin))) die("connect");
    put(fd, strtoull(argv[3], NULL, 0));
    put(fd, strtoull(argv[4], NULL, 0));
    printf("ack=0x%" PRIx64 "\n", get(fd));
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    close(fd);
    return 0;
  }
  if (strcmp(argv[1], "server") == 0 && argc == 4) {
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin))) die("bind");
    if (listen(fd, 1)) die("listen");
    printf("listening\n");
    fflush(stdout);
    int c = accept(fd, NULL, NULL);
    if (c < 0) die("accept");
    uint64_t vcpu = get(c), gva = get(c);
    printf("vcpu=0x%" PRIx64 " gva=0x%" PRIx64 "\n", vcpu, gva);
    fflush(stdout);
    put(c, 0x5a5a5a5a5a5a5a5aULL);
    put(c, strtoull(argv[3], NULL, 0));
    char buf[64];
    while (read(c, buf, sizeof(buf)) > 0) {}
    printf("closed\n");
    return 0;
  }
  fprintf(stderr, "bad arguments\n");
  return 2;
}
