//go:build cgo && linux

// The C half of package nsenter: see nsenter.go for the protocol. Only
// async-signal-safe, allocation-free calls here: this runs before the Go
// runtime and, after fork, in a copy of it.
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define SYNC_FD 3
#define PIDFD_FD 4

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

static void fail(const char *what, int err)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf),
			 "{\"type\":\"error\",\"error\":{\"stage\":\"nsenter\",\"message\":\"%s: %s\",\"errno\":%d}}",
			 what, strerror(err), err);
	if (n > 0)
		send(SYNC_FD, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1, MSG_NOSIGNAL);
	_exit(1);
}

void berth_nsenter(void)
{
	const char *v = getenv("_BERTH_NSENTER");
	char *end;
	long flags;
	char c;
	ssize_t n;
	pid_t pid;
	int pidfd;

	if (v == NULL || *v == '\0')
		return;
	errno = 0;
	flags = strtol(v, &end, 10);
	if (*end != '\0' || errno != 0 || flags <= 0)
		fail("bad _BERTH_NSENTER", EINVAL);

	/*
	 * Not dumpable until execve: once we are in the container's pid
	 * namespace its processes could otherwise open /proc/<us>/exe and
	 * reach the shim's binary (runc's CVE-2019-5736). execve of the user's
	 * program makes the process dumpable again.
	 */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		fail("prctl(PR_SET_DUMPABLE)", errno);

	do {
		n = recv(SYNC_FD, &c, 1, 0);
	} while (n < 0 && errno == EINTR);
	if (n != 1)
		_exit(1); /* parent gone: nothing to report to */

	if (setns(PIDFD_FD, (int)flags) < 0)
		fail("setns", errno);
	close(PIDFD_FD);

	pid = fork();
	if (pid < 0)
		fail("fork", errno);
	if (pid == 0)
		return; /* into the Go runtime, inside the namespaces */

	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	{
		char buf[64];
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov;
		struct msghdr msg;
		int len = snprintf(buf, sizeof(buf), "{\"type\":\"pid\",\"pid\":%d}", (int)pid);

		memset(&msg, 0, sizeof(msg));
		memset(cbuf, 0, sizeof(cbuf));
		iov.iov_base = buf;
		iov.iov_len = (size_t)len;
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		if (pidfd >= 0) {
			struct cmsghdr *cm;
			msg.msg_control = cbuf;
			msg.msg_controllen = sizeof(cbuf);
			cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &pidfd, sizeof(int));
		}
		if (sendmsg(SYNC_FD, &msg, MSG_NOSIGNAL) < 0)
			_exit(1);
	}
	_exit(0);
}
