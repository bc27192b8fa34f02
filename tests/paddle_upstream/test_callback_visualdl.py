# Vendored for paddle-mnist-hapi from PaddlePaddle/Paddle under the Apache License 2.0 (its notice follows):
#   https://github.com/PaddlePaddle/Paddle/blob/5c18762d15ce488bb06d69bc95fcb2bc8b65d86f/test/legacy_test/test_callback_visualdl.py
# The only version in reach. It is newer than the pinned Paddle 3.3.1 (the release's own commit,
# 7688495538f4, could not be fetched offline) and builds Accuracy(task="multiclass", num_classes=10), which 3.3.1
# rejects (TypeError), with Paddle's callback as with ours.
# ADAPTED in one line: `metrics=paddle.metric.Accuracy()`, 3.3.1's API (as in the file's earlier
# versions, python/paddle/tests/). Otherwise unchanged; tests/paddle_upstream/conftest.py swaps in this
# library's VisualDL and serves MNIST offline.
# Copyright (c) 2020 PaddlePaddle Authors. All Rights Reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

import shutil
import tempfile
import unittest

import paddle
import paddle.vision.transforms as T
from paddle.static import InputSpec
from paddle.vision.datasets import MNIST


class MnistDataset(MNIST):
    def __len__(self):
        return 512


class TestCallbacks(unittest.TestCase):
    def setUp(self):
        self.save_dir = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.save_dir)

    def test_visualdl_callback(self):
        inputs = [InputSpec([-1, 1, 28, 28], 'float32', 'image')]
        labels = [InputSpec([None, 1], 'int64', 'label')]

        transform = T.Compose([T.Transpose(), T.Normalize([127.5], [127.5])])
        train_dataset = MnistDataset(mode='train', transform=transform)
        eval_dataset = MnistDataset(mode='test', transform=transform)

        net = paddle.vision.models.LeNet()
        model = paddle.Model(net, inputs, labels)

        optim = paddle.optimizer.Adam(0.001, parameters=net.parameters())
        model.prepare(
            optimizer=optim,
            loss=paddle.nn.CrossEntropyLoss(),
            metrics=paddle.metric.Accuracy(),
        )

        callback = paddle.callbacks.VisualDL(log_dir='visualdl_log_dir')
        model.fit(
            train_dataset, eval_dataset, batch_size=64, callbacks=callback
        )


if __name__ == '__main__':
    unittest.main()
