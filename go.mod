module github.com/ota-agent/ota-agent

go 1.26.8
