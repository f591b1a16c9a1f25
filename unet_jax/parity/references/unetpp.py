"""UNet++ `UnetPlusPlus` / `ContinusParalleConv`: the blog code quoted in seed 003 (no
authoritative upstream). Changed: `in_channels` (the seed fixes 3) and `base_width`
(the seed fixes 64) are parameters; the ten `CONVi_j`/`upsample_i_j` are built in a loop
in the seed's order."""

import torch
import torch.nn as nn

# The seed's declaration orders (they set the state_dict key order).
CONVS = ((3, 1), (2, 2), (2, 1), (1, 1), (1, 2), (1, 3), (0, 1), (0, 2), (0, 3), (0, 4))
UPSAMPLES = ((3, 1), (2, 1), (2, 2), (1, 1), (1, 2), (1, 3), (0, 1), (0, 2), (0, 3), (0, 4))


class ContinusParalleConv(nn.Module):
    def __init__(self, in_channels, out_channels, pre_Batch_Norm=True):
        super().__init__()
        if pre_Batch_Norm:
            self.Conv_forward = nn.Sequential(
                nn.BatchNorm2d(in_channels), nn.ReLU(),
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels), nn.ReLU(),
                nn.Conv2d(out_channels, out_channels, 3, padding=1))
        else:
            self.Conv_forward = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels), nn.ReLU(),
                nn.Conv2d(out_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x):
        return self.Conv_forward(x)


class UnetPlusPlus(nn.Module):
    def __init__(self, num_classes, deep_supervision=False, in_channels=3, base_width=64):
        super().__init__()
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        w = [base_width * 2**i for i in range(5)]
        for i, j in CONVS:
            setattr(self, f"CONV{i}_{j}", ContinusParalleConv(w[i] * (j + 1), w[i], True))
        for i, (cin, cout) in enumerate(zip([in_channels] + w[:4], w)):
            setattr(self, f"stage_{i}", ContinusParalleConv(cin, cout, pre_Batch_Norm=False))
        self.pool = nn.MaxPool2d(2)
        for i, j in UPSAMPLES:
            setattr(self, f"upsample_{i}_{j}",
                    nn.ConvTranspose2d(w[i + 1], w[i], kernel_size=4, stride=2, padding=1))
        for k in range(1, 5):
            setattr(self, f"final_super_0_{k}", nn.Sequential(
                nn.BatchNorm2d(w[0]), nn.ReLU(), nn.Conv2d(w[0], self.num_classes, 3, padding=1)))

    def forward(self, x):
        x_0_0 = self.stage_0(x)
        x_1_0 = self.stage_1(self.pool(x_0_0))
        x_2_0 = self.stage_2(self.pool(x_1_0))
        x_3_0 = self.stage_3(self.pool(x_2_0))
        x_4_0 = self.stage_4(self.pool(x_3_0))
        x_0_1 = self.CONV0_1(torch.cat([self.upsample_0_1(x_1_0), x_0_0], 1))
        x_1_1 = self.CONV1_1(torch.cat([self.upsample_1_1(x_2_0), x_1_0], 1))
        x_2_1 = self.CONV2_1(torch.cat([self.upsample_2_1(x_3_0), x_2_0], 1))
        x_3_1 = self.CONV3_1(torch.cat([self.upsample_3_1(x_4_0), x_3_0], 1))
        x_2_2 = self.CONV2_2(torch.cat([self.upsample_2_2(x_3_1), x_2_0, x_2_1], 1))
        x_1_2 = self.CONV1_2(torch.cat([self.upsample_1_2(x_2_1), x_1_0, x_1_1], 1))
        x_1_3 = self.CONV1_3(torch.cat([self.upsample_1_3(x_2_2), x_1_0, x_1_1, x_1_2], 1))
        x_0_2 = self.CONV0_2(torch.cat([self.upsample_0_2(x_1_1), x_0_0, x_0_1], 1))
        x_0_3 = self.CONV0_3(torch.cat([self.upsample_0_3(x_1_2), x_0_0, x_0_1, x_0_2], 1))
        x_0_4 = self.CONV0_4(torch.cat([self.upsample_0_4(x_1_3), x_0_0, x_0_1, x_0_2, x_0_3], 1))
        if self.deep_supervision:
            return [self.final_super_0_1(x_0_1), self.final_super_0_2(x_0_2),
                    self.final_super_0_3(x_0_3), self.final_super_0_4(x_0_4)]
        return self.final_super_0_4(x_0_4)
