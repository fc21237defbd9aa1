/* test_transport.c - cancelling registry requests (client.h's reg_cancel).
 *
 * A loopback server that accepts and never answers stands for a hung
 * registry; a request to it must end with -EINTR as soon as its bound
 * reg_cancel asks, long before -o timeout. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "client.h"

struct hung {
	int fd;			/* listening */
	int port;
	struct reg_cancel *cancel;	/* set once a connection came */
	int accepted;
};

/* Accept one connection, then ask the request to stop: the request is
 * then surely in flight, waiting for an answer that never comes. */
static void *hung_serve(void *arg)
{
	struct hung *h = arg;
	int c = accept(h->fd, NULL, NULL);

	if (c >= 0) {
		h->accepted = 1;
		if (h->cancel)
			atomic_store(&h->cancel->requested, true);
		/* Hold it until the client hangs up (bounded). */
		struct timeval tv = { .tv_sec = 5 };
		char buf[4096];
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		while (read(c, buf, sizeof(buf)) > 0)
			;
		close(c);
	}
	return NULL;
}

static int hung_start(struct hung *h)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	h->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (h->fd < 0 || bind(h->fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(h->fd, 4) < 0 || getsockname(h->fd, (struct sockaddr *)&a, &len) < 0)
		return -1;
	h->port = ntohs(a.sin_port);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int polls;

static bool poll_third(void *arg)
{
	(void)arg;
	return ++polls >= 3;
}

/* A manifest request from this thread, with @cancel bound, to a hung
 * server (@h, started here, stopped after): its result, and how long it
 * took in *@secs. */
static int hung_request(struct regclient *rc, struct hung *h, struct reg_cancel *cancel,
			double *secs, struct reg_error *err)
{
	struct reg_manifest m = { 0 };
	char reg[32];
	pthread_t t;
	double t0;
	int ret;

	if (hung_start(h) < 0 || pthread_create(&t, NULL, hung_serve, h) != 0)
		return -EIO;
	snprintf(reg, sizeof(reg), "127.0.0.1:%d", h->port);
	CHECK(regclient_cancel_bind(cancel) == NULL);
	t0 = now_s();
	ret = regclient_get_manifest(rc, reg, "a/b", "1", 0, NULL, &m, err);
	*secs = now_s() - t0;
	CHECK(regclient_cancel_bind(NULL) == cancel);
	pthread_join(t, NULL);
	close(h->fd);
	reg_manifest_release(&m);
	return ret;
}

/* A request in flight ends with -EINTR when @requested is set; one bound
 * to a flag already set is not sent; unbound, nothing is cancelled. */
static void test_cancel_flag(void)
{
	struct regclient_opts o = { .timeout = 30 };
	struct regclient *rc = regclient_new(&o);
	struct reg_cancel cancel = { .requested = false };
	struct hung h = { .cancel = &cancel };
	struct reg_manifest m = { 0 };
	struct reg_error err;
	double secs;
	char reg[32];

	CHECK(rc != NULL);
	CHECK(hung_request(rc, &h, &cancel, &secs, &err) == -EINTR);
	CHECK(secs < 10);	/* -o timeout is 30 */
	CHECK(h.accepted);
	CHECK_STR(err.message, "cancelled");
	snprintf(reg, sizeof(reg), "127.0.0.1:%d", h.port);	/* closed now */
	regclient_cancel_bind(&cancel);
	CHECK(regclient_get_manifest(rc, reg, "a/b", "1", 0, NULL, &m, &err) == -EINTR);
	regclient_cancel_bind(NULL);
	CHECK(regclient_get_manifest(rc, reg, "a/b", "1", 0, NULL, &m, &err) != -EINTR);
	regclient_free(rc);
}

/* @poll is asked in the bound thread while the request waits. */
static void test_cancel_poll(void)
{
	struct regclient_opts o = { .timeout = 30 };
	struct regclient *rc = regclient_new(&o);
	struct reg_cancel cancel = { .poll = poll_third };
	struct hung h = { 0 };
	struct reg_error err;
	double secs;

	CHECK(rc != NULL);
	CHECK(hung_request(rc, &h, &cancel, &secs, &err) == -EINTR);
	CHECK(secs < 10);
	CHECK(polls >= 3);
	regclient_free(rc);
}

int main(void)
{
	test_cancel_flag();
	test_cancel_poll();
	return CHECK_DONE();
}
