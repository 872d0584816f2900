import numpy as np


def test_live_ready_and_infer(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    import tritonclient.grpc as triton

    features = triton.InferInput("features", [1, 16], "FP32")
    features.set_data_from_numpy(np.zeros((1, 16), np.float32))
    result = client.infer("tabular_classifier", [features])
    assert result.as_numpy("probabilities").shape == (1, 3)
