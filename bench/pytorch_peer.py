#!/usr/bin/python3
"""The PyTorch peer of the throughput benchmark: the same MLPs as
configs/fashion_mnist_wide.textproto (784-1024x6-10) and
configs/fashion_mnist_dni.textproto (784-256x3-10), each hidden layer
Linear + LayerNorm + ReLU, trained with Adam on batches of 256 with one
thread. Prints the training examples per second of the second pass over
the examples, like bench/train_in_process.

Uses Debian's python3-torch (install libopenblas0-openmp too; without it
PyTorch runs on the reference BLAS). Inputs are random: throughput does
not depend on the pixel values.

Usage: /usr/bin/python3 bench/pytorch_peer.py {wide|mlp} EXAMPLES
"""
import sys
import time

import torch


def build(widths):
    layers, previous = [], 784
    for width in widths:
        layers += [torch.nn.Linear(previous, width), torch.nn.LayerNorm(width),
                   torch.nn.ReLU()]
        previous = width
    layers.append(torch.nn.Linear(previous, 10))
    return torch.nn.Sequential(*layers)


def main():
    model_name, examples = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    torch.manual_seed(1)
    widths = [1024] * 6 if model_name == "wide" else [256] * 3
    model = build(widths)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    loss_function = torch.nn.CrossEntropyLoss()
    batches = examples // 256
    x = torch.rand(256, 784)
    y = torch.randint(0, 10, (256,))
    for epoch in (1, 2):
        start = time.perf_counter()
        for _ in range(batches):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(model(x), y)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        print(f"epoch {epoch}: {batches * 256 / seconds:.0f} samples/s")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
