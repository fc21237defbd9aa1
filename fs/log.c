/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static bool debug_on;
static bool syslog_on;

void log_setup(bool debug, bool use_syslog)
{
	debug_on = debug;
	syslog_on = use_syslog;
	if (use_syslog)
		openlog("ocifs", LOG_PID, LOG_DAEMON);
}

bool log_debugging(void)
{
	return debug_on;
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	if (prio == LOG_DEBUG && !debug_on)
		return;
	va_start(ap, fmt);
	if (syslog_on) {
		vsyslog(prio, fmt, ap);
	} else {
		/* One fprintf per line keeps lines from threads whole. */
		char line[2048];
		vsnprintf(line, sizeof(line), fmt, ap);
		fprintf(stderr, "ocifs: %s\n", line);
	}
	va_end(ap);
}
