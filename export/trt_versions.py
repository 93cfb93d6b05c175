"""The TensorRT major versions kdforge supports: engines are built for them and ONNX files linted against
their parser rules. One declaration for the linter (`kdforge check --trt-version`), deploy's readiness
verdicts and the TensorRT availability check; it imports nothing, so the CLI's parser stays light."""

TRT_VERSIONS = (10, 11)  # JetPack 6 ships 10.x; each needs its opset and operator tables in lint/rules.py
