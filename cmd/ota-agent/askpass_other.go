//go:build !linux

package main

import "errors"

func askPassword(string) (string, error) {
	return "", errors.New("no terminal prompt on this system: use --password-file or $OTA_AGENT_SIGN_PASSWORD")
}
