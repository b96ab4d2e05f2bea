package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/ota-agent/ota-agent/agent"
	"github.com/ota-agent/ota-agent/serve"
)

// shutdownGrace bounds how long serve waits for transfers in progress after
// a signal before it closes their connections.
const shutdownGrace = 5 * time.Second

const serveAbout = `Serve the release directory DIR (DIR/<project>/version, DIR/<project>/<v>_<file>
or DIR/<project>/<v>/<file>) over HTTP, or HTTPS with --tls-cert and --tls-key.
Files only, GET and HEAD; nothing outside DIR, and only paths the layout can
name: a release's dot files (<v>/lib/.env) are served, the tree's own (.git,
<project>/.htpasswd) are not. Runs until interrupted.`

type serveOptions struct {
	addr, user, passwordFile, certFile, keyFile, level *string
}

func serveFlags(fs *flag.FlagSet) runFunc {
	var o serveOptions
	o.addr = fs.String("addr", "127.0.0.1:8080", "listen on `host:port`")
	o.user = fs.String("user", "", "require HTTP Basic auth with this `name`")
	o.passwordFile = fs.String("password-file", "", "read the Basic auth password from `file` (trailing whitespace ignored, as for the agent)")
	o.certFile = fs.String("tls-cert", "", "serve HTTPS with this PEM certificate `file` (chain included)")
	o.keyFile = fs.String("tls-key", "", "PEM private key `file` for --tls-cert")
	o.level = fs.String("log-level", "info", "`LEVEL` of messages shown: trace, debug (one line per request), info, warn or error")
	return func(ctx context.Context, g *globals, args []string) error { return runServe(ctx, g, o, args) }
}

// runServe runs `ota-agent serve`: a static server for a release tree, for
// trying the agent out and for small fleets.
func runServe(ctx context.Context, g *globals, o serveOptions, pos []string) error {
	addr, user, passwordFile, certFile, keyFile, level := o.addr, o.user, o.passwordFile, o.certFile, o.keyFile, o.level
	if len(pos) != 1 {
		return usageErrorf("serve: want one directory, got %d arguments; run 'ota-agent serve --help'", len(pos))
	}
	dir := pos[0]
	if (*user == "") != (*passwordFile == "") {
		return usageErrorf("serve: --user and --password-file go together")
	}
	if (*certFile == "") != (*keyFile == "") {
		return usageErrorf("serve: --tls-cert and --tls-key go together")
	}
	logger, err := newLogger(g.stderr, *level)
	if err != nil {
		return err
	}

	opts := serve.Options{User: *user, Log: logger}
	if *passwordFile != "" {
		if opts.Password, err = readSecret(*passwordFile); err != nil {
			return &agent.ConfigError{Key: "--password-file", Msg: err.Error()}
		}
	}
	h, err := serve.Handler(dir, opts)
	if err != nil {
		return &agent.ConfigError{Msg: err.Error()}
	}
	// HTTP/1.1 only, as the agent speaks: release builds leave net/http's
	// HTTP/2 out (-tags nethttpomithttp2), and a server that still offered
	// "h2" in ALPN would then drop the connection of a client that took it.
	var http1 http.Protocols
	http1.SetHTTP1(true)
	srv := &http.Server{
		Handler:           h,
		Protocols:         &http1,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: a large release over a slow link must finish.
		ErrorLog: log.New(logWriter{logger}, "", 0),
	}
	scheme := "http"
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return &agent.ConfigError{Key: "--tls-cert", Msg: err.Error()}
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		scheme = "https"
	} else if *user != "" {
		logger.Warn().Msg("Basic auth over plain http sends the password in clear text; use --tls-cert and --tls-key")
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		if scheme == "https" {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	fmt.Fprintf(g.stderr, "serving %s on %s://%s\n", dir, scheme, ln.Addr())

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn().Dur("after", shutdownGrace).Msg("closing transfers still in progress")
		srv.Close()
	}
	<-errc // http.ErrServerClosed
	return nil
}

// logWriter turns net/http's own messages (TLS handshake failures, accept
// errors) into info events, so they follow --log-level.
type logWriter struct{ l zerolog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Info().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
