/* log.h - the daemon's log: stderr in the foreground, syslog once
 * daemonized. Never pass credentials here. */
#ifndef OCIFS_LOG_H
#define OCIFS_LOG_H

#include <stdbool.h>
#include <syslog.h>

void log_setup(bool debug, bool use_syslog);
bool log_debugging(void);
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
