module github.com/onnxprune/onnxprune

go 1.26

require (
	github.com/dlclark/regexp2 v1.12.0
	github.com/urfave/cli/v3 v3.14.0
	github.com/yalue/onnxruntime_go v1.27.0
	google.golang.org/protobuf v1.36.12
)
