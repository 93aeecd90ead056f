module natflow.local/garp

go 1.22
