package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
)

// natsServerLog is the embedded NATS server's logger (server.Logger): its
// records go to fedsender's slog handler with component=nats-server. Its
// notices (the start-up banner among them) are debug records. A fatal
// error is also handed to connect, since the server only logs it: a busy
// nats.listen port must stop fedsender at once, with the bind error.
type natsServerLog struct {
	log   *slog.Logger
	fatal chan string // buffered: the first fatal error
}

func newNATSServerLog(log *slog.Logger) *natsServerLog {
	return &natsServerLog{log: log.With("component", "nats-server"), fatal: make(chan string, 1)}
}

func (l *natsServerLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsServerLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsServerLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsServerLog) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsServerLog) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }

func (l *natsServerLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}

// natsClientLog makes the NATS client report to slog (component=nats)
// what it would otherwise print to stderr or keep to itself: asynchronous
// errors (a subscription the server refuses, a slow consumer), and the
// connection's losses and returns.
func natsClientLog(log *slog.Logger) []nats.Option {
	log = log.With("component", "nats")
	return []nats.Option{
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			level := slog.LevelError
			switch {
			case !nc.IsConnected():
				level = slog.LevelDebug // consumers go quiet in every outage: the disconnect said so
			case errors.Is(err, nats.ErrConsumerNotActive):
				// A consumer's missed heartbeats (a cluster node restarting)
				// are expected; nats.go recreates the consumer.
				level = slog.LevelWarn
			}
			args := []any{"error", err}
			if sub != nil {
				args = append(args, "subject", sub.Subject)
			}
			log.Log(context.Background(), level, "NATS error", args...)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: fedsender closed it
				log.Warn("NATS disconnected; reconnecting", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
		}),
	}
}
